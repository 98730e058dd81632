"""``DownloadWorker``: one file, streamed to a partial file, resumed, retried, verified, renamed."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import errno
import os
import random
import stat
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from . import _files, _locks, _segments, _state
from ._body import Body
from ._errors import (
    ChecksumMismatchError,
    DownloadError,
    DownloadTimeoutError,
    ErrorKind,
    FileSystemError,
    HTTPStatusError,
    IncompleteBodyError,
    InvalidConfigError,
    ProcessingError,
    file_error,
    file_errors,
    http_error,
    translate,
)
from ._headers import parse_content_range
from ._models import (
    Checksum,
    DownloadStatus,
    ExtractLimits,
    FileConfig,
    PatchDownloadInfo,
    check_int,
)
from ._naming import sanitize_filename
from ._origins import Origins
from ._processors import Extract, ProcessJob, Processor
from ._storage import Storage
from ._urls import origin, redact_url

#: Large reads keep one stream from being CPU-bound (1 KiB reads cost 4x the CPU; see KNOWLEDGE).
#: 1 MiB reads with a 4 MiB aiohttp buffer: 1 GiB on loopback at ~1060 MB/s vs ~690 MB/s with
#: 512 KiB reads and a 1 MiB buffer (medians of 6, benchmarks/README.md).
DEFAULT_CHUNK_SIZE = 1024 * 1024
#: Bodies smaller than this get no resume record: restarting them costs less than the record.
RESUME_MIN_BYTES = 256 * 1024
#: Seconds between looks at a file another process is downloading (its lock, its progress):
#: the first look comes soon (a small file takes milliseconds), later ones back off to the last.
LOCK_POLLS = (0.01, 0.02, 0.05, 0.1, 0.25)
#: Seconds between progress reports of a processor (its thread may call back far more often).
PROCESS_REPORT_EVERY = 0.25
#: HTTP statuses after which a mirror may still have the file.
_MIRROR_STATUSES = frozenset({404, 410})

Report = Callable[[PatchDownloadInfo], None]
Claim = Callable[[Path], bool]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried: exponential backoff with full jitter.

    ``retries`` is the number of extra attempts.  A ``Retry-After`` header replaces the backoff
    for that wait, capped at ``max_retry_after`` so a server cannot park a download for hours.
    """

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        check_int("retries", self.retries, 0)
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("backoff times must be >= 0")

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.max_backoff, self.backoff * 2 ** (failures - 1))
        # Full jitter keeps many clients that failed together from retrying together.
        return random.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class WorkItem:
    """A validated ``FileConfig`` with everything resolved that can be known before a request."""

    config: FileConfig
    dest: Path
    name: str
    #: True when the user chose the name: the server's Content-Disposition is then ignored.
    name_fixed: bool
    headers: Mapping[str, str]
    checksum: Checksum | None = field(default=None)
    #: Set when the server broke the rules of a segmented download: one stream from now on.
    segments_off: bool = False
    #: Whether a state record may exist on disk: most files never get one, and skipping the
    #: lookups and deletes saves system calls that dominate a batch of small files.
    has_record: bool = False
    #: True when the name came from the server (now or in an earlier run's record).
    server_named: bool = False
    #: The cross-process locks of ``dest`` (None where the file system has none), and the
    #: names this item holds (its name, and the server's name for it if that differs).
    locks: _locks.FolderLocks | None = None
    locked: list[str] = field(default_factory=list)
    #: Which of the file's URLs is being tried: 0 the config's url, then its mirrors in turn.
    source_index: int = 0
    #: True when the manager has other work to give: a file another process holds is then
    #: handed back (``download`` returns False) instead of waited for.
    may_defer: bool = False
    #: True once handed back for that reason: the display says so until the lock is ours.
    deferred: bool = False
    #: Where the bytes go when ``dest`` is not a local folder (an object store, say): the body
    #: is then streamed to it, and nothing of this item touches the local file system.
    storage: Storage | None = None
    #: Which URL each file of ``dest`` came from (see ``_origins``); None: not known.
    origins: Origins | None = None
    _path: Path | None = field(default=None, repr=False)

    @property
    def source(self) -> str:
        """The URL requested now: the config's ``url``, or the mirror being tried."""
        index = self.source_index
        return self.config.url if index == 0 else self.config.mirrors[index - 1]

    def save_record(self, record: _state.Record) -> None:
        """Write this file's state record (see ``_state``)."""
        self.has_record = True
        _state.save(self.dest, record)

    def load_record(self) -> _state.Record | None:
        """The state record of this file, if it may have one."""
        return _state.load(self.dest, self.url) if self.has_record else None

    def forget_record(self) -> None:
        """Delete this file's state record, if it may have one."""
        if self.has_record:
            _state.delete(self.dest, self.url)
            self.has_record = False

    def discard_partial(self) -> None:
        """Delete the partial file and its record: the next attempt starts from zero."""
        if self.storage is not None:  # nothing partial is kept: every attempt starts afresh
            return
        with contextlib.suppress(OSError):
            _state.part_path(self.path).unlink()
        self.forget_record()

    def check_digest(self, digest: str) -> None:
        """Raise ``ChecksumMismatchError`` on a mismatch, leaving no partial file behind."""
        expected = self.checksum
        if expected is None or digest == expected.hexdigest:
            return
        self.discard_partial()
        raise ChecksumMismatchError(
            f"{expected.algorithm} mismatch: expected {expected.hexdigest[:16]}…, "
            f"got {digest[:16]}…",
            url=redact_url(self.url),
        )

    @property
    def url(self) -> str:
        """The URL to download."""
        return self.config.url

    @property
    def path(self) -> Path:
        """The final path."""
        # Asked several times per file; a path join is a microsecond of a small file's budget.
        if self._path is None:
            self._path = self.dest / self.name
        return self._path

    def rename(self, name: str) -> None:
        """Save the file as ``name`` (in the same folder) from now on."""
        self.name = name
        self._path = None


class _Deferred(Exception):
    """Another process holds the file, and the manager has other work meanwhile."""


class _RestartFromZero(Exception):
    """The partial file cannot be continued (the server changed or ignored the range)."""


@dataclass(slots=True)
class _Progress:
    """What the current download knows across its attempts."""

    attempts: int = 0
    #: Set by a streamed attempt that never reported IN_PROGRESS (its body came in one read):
    #: the COMPLETED report carries them instead.
    http_status: int | None = None
    resumed_from: int | None = None


class DownloadWorker:
    """Downloads one ``WorkItem`` at a time; it keeps nothing of an item, so one serves a pool.

    Every state change goes through ``report``; the final state is COMPLETED, FAILED or, when the
    task is cancelled, CANCELLED (and the cancel propagates).  Bytes go to ``<name>.part`` (or,
    when there is nothing to resume, to an unnamed file on Linux) and reach the final path only
    complete and verified.
    """

    def __init__(
        self,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        retry: RetryPolicy | None = None,
        read_timeout: float | None = 60,
        connect_timeout: float | None = 30,
        timeout: float | None = None,
        overwrite: bool = False,
        max_redirects: int = 10,
        segments: int | None = None,
        extract: bool = False,
        extract_limits: ExtractLimits | None = None,
        processors: Sequence[Processor] = (),
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if segments is not None:
            check_int("segments", segments, 1)
        for processor in processors:
            if not isinstance(processor, Processor):
                raise InvalidConfigError(
                    f"processors must have a 'label' and a 'process(job)' method, got {processor!r}"
                )
        #: Extract archives whose FileConfig does not say (``FileConfig.extract=None``).
        self.extract = extract
        self.extractor = Extract(extract_limits)
        #: Run on every verified file, after extraction, in this order.
        self.processors = tuple(processors)
        self.chunk_size = chunk_size
        self.retry = retry or RetryPolicy()
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.overwrite = overwrite
        self.max_redirects = max_redirects
        #: Segments per large file: None splits automatically, 1 never (see ``_segments``).
        self.segments = segments
        self._timeouts: tuple[float | None, float | None, aiohttp.ClientTimeout] | None = None
        #: Folders seen to exist: a folder removed later is made again when a file is opened.
        self._folders: set[Path] = set()
        #: Folders whose file system has no unnamed files: partial files there get a name.
        self._no_unnamed: set[Path] = set()
        #: The cross-process locks of each folder (None: its file system has none).
        self._locks: dict[Path, _locks.FolderLocks | None] = {}
        #: Requests open per origin (``scheme://host:port``): automatic splitting adds
        #: connections to a host only while the batch leaves some of the per-host cap unused.
        self.busy: collections.Counter[str] = collections.Counter()

    def start_batch(self) -> None:
        """Forget what was learnt of the folders: they may have been removed or replaced."""
        self._folders.clear()
        self._no_unnamed.clear()
        self._locks.clear()

    def _client_timeout(self) -> aiohttp.ClientTimeout:
        """The timeouts of one request, made once while the settings stay the same."""
        cached = self._timeouts
        if cached is None or cached[:2] != (self.connect_timeout, self.read_timeout):
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
            )
            cached = self._timeouts = (self.connect_timeout, self.read_timeout, timeout)
        return cached[2]

    async def download(
        self, session: aiohttp.ClientSession, item: WorkItem, report: Report, claim: Claim
    ) -> bool:
        """Download ``item``, reporting every state change; never raises a ``DownloadError``.

        Returns False, with the item still unfinished, when another process is writing the file
        and ``item.may_defer`` says the manager would rather give this worker other work first.
        """
        progress = _Progress()
        started = time.time()
        # Few reports per file: for small files they are a real share of the work.
        report(PatchDownloadInfo(status=DownloadStatus.PENDING, started_at=started, attempts=1))
        try:
            if item.storage is not None:
                if await self._already_stored(item, item.storage, report):
                    return True
            else:
                await self._lock(item, report, claim)
                if await self._already_complete(item, report):
                    return True
            if self.timeout is None:  # the usual case: a timeout scope per file costs ~1 %
                await self._attempts(session, item, report, claim, progress)
                return True
            try:
                async with asyncio.timeout(self.timeout):
                    await self._attempts(session, item, report, claim, progress)
                return True
            except TimeoutError:
                raise DownloadTimeoutError(
                    f"timed out: the download took longer than timeout={self.timeout:g} s",
                    url=item.url,
                ) from None
        except _Deferred:
            return False
        except asyncio.CancelledError:
            report(
                PatchDownloadInfo(
                    status=DownloadStatus.CANCELLED, finished_at=time.time(), error="cancelled"
                )
            )
            raise
        except Exception as exc:  # every failure of one file is reported, never raised
            err = translate(exc, redact_url(item.url))
            report(
                PatchDownloadInfo(
                    status=DownloadStatus.FAILED,
                    finished_at=time.time(),
                    error=err.message,
                    error_kind=err.kind,
                    http_status=getattr(err, "status", None) or None,
                    attempts=progress.attempts,
                )
            )
            return True
        finally:
            if item.locks is not None:
                for name in item.locked:
                    item.locks.unlock(name)
                item.locked.clear()

    async def _lock(self, item: WorkItem, report: Report, claim: Claim) -> None:
        """Hold the file against other processes sharing the folder, waiting while one has it."""
        locks = self._folder_locks(item.dest)
        item.locks = locks
        if locks is None:
            return
        name = item.name
        if locks.try_lock(name):
            item.locked.append(name)
            if item.deferred:
                report(PatchDownloadInfo(note=""))
            return
        if item.may_defer:
            item.deferred = True
            report(PatchDownloadInfo(note="waiting for another process"))
            raise _Deferred
        part = f"{item.path}{_state.PART_SUFFIX}"
        record = _state.load(item.dest, item.url)
        total = record.total if record is not None else None
        polls = 0
        while True:
            # The other process's partial file shows its progress (an unnamed one cannot).
            report(
                PatchDownloadInfo(
                    status=DownloadStatus.PENDING,
                    note="waiting for another process",
                    bytes_downloaded=_regular_size(part),
                    total_bytes=total,
                )
            )
            await asyncio.sleep(LOCK_POLLS[min(polls, len(LOCK_POLLS) - 1)])
            polls += 1
            if locks.try_lock(name):
                break
        item.locked.append(name)
        report(PatchDownloadInfo(note="", bytes_downloaded=0))
        # The other process may have saved it under the server's name: its record says so.
        record = _state.load(item.dest, item.url)
        if record is None:
            return
        item.has_record = True
        if (
            record.complete
            and not item.name_fixed
            and record.name != name
            and claim(item.dest / record.name)
        ):
            item.rename(record.name)
            item.server_named = True
            report(PatchDownloadInfo(path=item.path))

    def _folder_locks(self, dest: Path) -> _locks.FolderLocks | None:
        try:
            return self._locks[dest]
        except KeyError:
            pass
        try:
            locks = _locks.for_folder(dest)
        except OSError as exc:
            raise file_error(dest / _state.STATE_DIR, exc) from exc
        self._locks[dest] = locks
        return locks

    async def _already_complete(self, item: WorkItem, report: Report) -> bool:
        """True (and reported) when the final file is there and, with a checksum, verified."""
        if self.overwrite:
            return False
        final = item.path
        try:  # one stat per file: on a re-run of many small files it is most of the work
            status = os.lstat(final)
        except OSError:
            return False
        if not stat.S_ISREG(status.st_mode):
            _files.check_final(final)  # a link or a folder there: a clear failure, now
            return False
        size = status.st_size
        if item.checksum is not None:
            digest = await asyncio.to_thread(_hash_file, final, item.checksum, size)
            if digest != item.checksum.hexdigest:
                return False
        elif item.origins is not None and item.origins.from_elsewhere(item.name, item.url):
            # Without a checksum only its origin tells whose file it is: another URL's file is
            # never reported as this one's, nor silently replaced.
            raise FileSystemError(
                f"{final} holds the file of another URL (downloaded there earlier); pass "
                "overwrite=True to replace it with this one, or give this download a "
                "FileConfig(filename=...)",
                url=redact_url(item.url),
            )
        # A process killed between the rename and the record delete leaves an incomplete
        # record by a complete file: it is stale, whoever finds it removes it.
        if item.has_record:
            record = item.load_record()
            if record is not None and not record.complete:
                with contextlib.suppress(OSError):
                    item.forget_record()
        await self._complete(item, report, _found(size))
        return True

    async def _already_stored(self, item: WorkItem, storage: Storage, report: Report) -> bool:
        """True (and reported) when ``storage`` holds the file, with the checksum if one is given.

        Objects appear only complete, so being there is enough; a checksum must match the one
        recorded when the object was stored (an object stored by someone else is fetched again).
        """
        if self.overwrite:
            return False
        found = await storage.stat(item.name)
        if found is None:
            return False
        if item.checksum is not None and found.checksum != str(item.checksum):
            return False
        if item.config.size_bytes is not None and found.size != item.config.size_bytes:
            return False
        await self._complete(item, report, _found(found.size))
        return True

    async def _upload(
        self, session: aiohttp.ClientSession, item: WorkItem, storage: Storage, report: Report
    ) -> int:
        """One request whose body streams into ``storage``, verified before the store completes.

        Nothing resumes: a store offers no partial object to continue.  Size and checksum are
        checked inside the iterator the storage reads, so a bad body raises there and the
        storage stores nothing.
        """
        async with session.get(
            item.source,
            headers={"Accept-Encoding": "identity", **item.headers},
            timeout=self._client_timeout(),
            allow_redirects=True,
            max_redirects=self.max_redirects,
        ) as resp:
            total = self._check_response(resp, item, 0, None)
            expected = item.checksum
            hasher = expected.new_hasher() if expected is not None else None
            report(
                PatchDownloadInfo(
                    status=DownloadStatus.IN_PROGRESS,
                    total_bytes=total,
                    bytes_downloaded=0,
                    resumed_from=0,
                    http_status=resp.status,
                )
            )
            done = 0
            url = redact_url(item.url)

            async def chunks() -> AsyncIterator[bytes]:
                nonlocal done
                read = resp.content.read
                size = self.chunk_size
                while chunk := await read(size):
                    if total is not None and done + len(chunk) > total:
                        raise IncompleteBodyError(
                            f"the server sent more than the announced {total} bytes", url=url
                        )
                    if hasher is not None:
                        hasher.update(chunk)
                    done += len(chunk)
                    if done != total:
                        report(PatchDownloadInfo(bytes_downloaded=done))
                    yield chunk
                if total is not None and done != total:
                    raise IncompleteBodyError(
                        f"the body ended after {done} of {total} bytes", url=url
                    )
                if expected is not None and hasher is not None:
                    digest = hasher.hexdigest()
                    if digest != expected.hexdigest:
                        raise ChecksumMismatchError(
                            f"{expected.algorithm} mismatch: expected "
                            f"{expected.hexdigest[:16]}…, got {digest[:16]}…",
                            url=url,
                        )

            await storage.write(
                item.name, chunks(), checksum=str(expected) if expected is not None else None
            )
            return done

    async def _complete(self, item: WorkItem, report: Report, patch: PatchDownloadInfo) -> None:
        """Run the item's processors on the verified file, then report ``patch`` (COMPLETED).

        ``patch`` carries its ``finished_at``; processors, when any ran, move it to their end.
        """
        processors = self._processors_for(item)
        if processors:  # most files have none: they go without a copy of the patch
            output = None
            for processor in processors:
                made = await self._process(processor, item, report)
                output = made if made is not None else output
            patch = dataclasses.replace(patch, finished_at=time.time(), output=output)
        report(patch)

    def _processors_for(self, item: WorkItem) -> Sequence[Processor]:
        config = item.config
        wanted = config.extract if config.extract is not None else self.extract
        if wanted or config.extract_to:
            return (self.extractor, *self.processors)
        return self.processors

    async def _process(self, processor: Processor, item: WorkItem, report: Report) -> Path | None:
        """One processor, in a thread; a cancel waits for it to clean up, then propagates."""
        loop = asyncio.get_running_loop()
        label = processor.label
        report(PatchDownloadInfo(status=DownloadStatus.PROCESSING, note=label))
        last = 0.0

        def progress(done: int, total: int | None) -> None:  # called in the processor's thread
            nonlocal last
            now = time.monotonic()
            if now - last < PROCESS_REPORT_EVERY:
                return
            last = now
            note = f"{label} {min(99, done * 100 // total)} %" if total else label
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is watching
                loop.call_soon_threadsafe(report, PatchDownloadInfo(note=note))

        job = ProcessJob(item.path, item.dest, item.config, progress=progress)
        future = loop.run_in_executor(None, processor.process, job)
        try:
            made = await asyncio.shield(future)
        except asyncio.CancelledError:
            job.cancelled.set()
            with contextlib.suppress(BaseException):  # its own error matters less than the cancel
                await future
            raise
        except DownloadError:
            raise
        except Exception as exc:
            raise ProcessingError(
                f"{label} failed: {type(exc).__name__}: {exc}", url=redact_url(item.url)
            ) from exc
        if made is not None and not isinstance(made, Path):
            raise ProcessingError(
                f"{label}: the processor returned {made!r}, not a Path or None",
                url=redact_url(item.url),
            )
        return made

    async def _attempts(
        self,
        session: aiohttp.ClientSession,
        item: WorkItem,
        report: Report,
        claim: Claim,
        progress: _Progress,
    ) -> None:
        if item.storage is None and item.dest not in self._folders:  # a stat per folder
            if not item.dest.is_dir():
                with file_errors(item.dest):
                    item.dest.mkdir(parents=True, exist_ok=True)
            self._folders.add(item.dest)
        failures = 0
        while True:
            progress.attempts += 1
            progress.http_status = progress.resumed_from = None
            if progress.attempts > 1:
                report(PatchDownloadInfo(attempts=progress.attempts))
            try:
                if item.storage is not None:
                    done = await self._upload(session, item, item.storage, report)
                else:
                    try:
                        done = await self._attempt(
                            session, item, report, claim, progress, resume=True
                        )
                    except _RestartFromZero:
                        item.discard_partial()
                        done = await self._attempt(
                            session, item, report, claim, progress, resume=False
                        )
            except Exception as exc:  # classified below; only transient ones are retried
                err = translate(exc, redact_url(item.source))
                failures += 1
                if not err.retryable or failures > self.retry.retries:
                    if not self._next_mirror(item, err, report):
                        raise err from exc
                    failures = 0
                    continue
                retry_after = err.retry_after if isinstance(err, HTTPStatusError) else None
                delay = self.retry.delay(failures, retry_after)
                report(
                    PatchDownloadInfo(
                        status=DownloadStatus.PENDING,
                        note=f"retry {failures} of {self.retry.retries} in {delay:.1f} s "
                        f"after: {err.message}",
                    )
                )
                await asyncio.sleep(delay)
                continue
            self._finish_record(item)
            if item.origins is not None:
                item.origins.record(item.name, item.url)
            if item.source_index:
                note: str | None = f"from mirror {item.source_index}: {redact_url(item.source)}"
            else:
                # The note said "retry ..." until now; say how it ended instead.
                note = (
                    f"completed on attempt {progress.attempts}" if progress.attempts > 1 else None
                )
            await self._complete(
                item,
                report,
                PatchDownloadInfo(
                    status=DownloadStatus.COMPLETED,
                    bytes_downloaded=done,
                    total_bytes=done,
                    finished_at=time.time(),
                    http_status=progress.http_status,
                    resumed_from=progress.resumed_from,
                    note=note,
                    served_by=redact_url(item.source) if item.source_index else None,
                ),
            )
            return

    def _next_mirror(self, item: WorkItem, err: DownloadError, report: Report) -> bool:
        """Switch to the next mirror after ``err`` if another server may do better."""
        mirrors = item.config.mirrors
        if item.source_index >= len(mirrors):
            return False
        worth = err.kind in (ErrorKind.CONNECTION, ErrorKind.TIMEOUT) or (
            isinstance(err, HTTPStatusError)
            and (err.status in _MIRROR_STATUSES or 500 <= err.status <= 599)
        )
        if not worth:
            return False
        record = item.load_record()
        if record is None or not (record.etag and not record.etag.startswith("W/")):
            # Only a strong ETag proves another server's bytes continue these: start again.
            item.discard_partial()
        item.source_index += 1
        report(
            PatchDownloadInfo(
                status=DownloadStatus.PENDING,
                note=f"trying mirror {item.source_index} of {len(mirrors)} "
                f"({redact_url(item.source)}) after: {err.message}",
            )
        )
        return True

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        item: WorkItem,
        report: Report,
        claim: Claim,
        progress: _Progress,
        *,
        resume: bool,
    ) -> int:
        """One request (or one segmented transfer); returns the size of the verified file."""
        record = None if self.overwrite and not resume else item.load_record()
        offset = 0
        if record is not None and record.source not in (None, item.source) and not record.strong:
            record = None  # a date from another server proves nothing about these bytes
        if resume and record is not None and record.name == item.name and record.validator:
            offset = _partial_size(item)
            if record.total is not None and offset >= record.total:
                offset = 0
        if resume and record is not None and record.segments and record.name == item.name:
            return await self._segmented(session, item, report, record)
        headers: dict[str, str] | None
        if offset:
            assert record is not None
            assert record.validator is not None
            headers = {
                "Accept-Encoding": "identity",
                **item.headers,
                "Range": f"bytes={offset}-",
                "If-Range": record.validator,
            }
        elif item.headers or session.headers.get("Accept-Encoding") != "identity":
            headers = {"Accept-Encoding": "identity", **item.headers}
        else:
            headers = None  # the manager's session sends exactly these already
        busy, host = self.busy, origin(item.source)
        busy[host] += 1
        try:
            async with session.get(
                item.source,
                headers=headers,
                timeout=self._client_timeout(),
                allow_redirects=True,
                max_redirects=self.max_redirects,
            ) as resp:
                total = self._check_response(resp, item, offset, record)
                if resp.status == 200:
                    offset = 0
                if offset == 0 and not item.name_fixed:
                    self._name_from_server(resp, item, report, claim)
                encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
                etag = resp.headers.get("ETag")
                last_modified = resp.headers.get("Last-Modified")
                resumable = not encoded and bool(
                    (etag and not etag.startswith("W/")) or last_modified
                )
                # A small body is cheaper to fetch again than to keep a record for (a file
                # creation costs ~0.6 ms on ext4 here; see benchmarks/README.md).
                resumable = resumable and (total is None or total >= RESUME_MIN_BYTES)
                if resumable and offset == 0:
                    with file_errors(item.dest):
                        item.save_record(
                            _state.Record(
                                url=item.url,
                                name=item.name,
                                etag=etag,
                                last_modified=last_modified,
                                total=total,
                                source=item.source if item.source_index else None,
                            ),
                        )
                wanted = item.config.segments if item.config.segments is not None else self.segments
                if resumable and offset == 0 and not item.segments_off:
                    count = _segments.segment_count(resp, total, wanted, session)
                    if count > 1:
                        report(PatchDownloadInfo(http_status=resp.status))
                        fresh = _state.Record(
                            item.url,
                            item.name,
                            etag,
                            last_modified,
                            total,
                            source=item.source if item.source_index else None,
                        )
                        return await self._segmented(session, item, report, fresh, resp, count)
                return await self._stream(resp, item, report, progress, offset, total, resumable)
        finally:
            busy[host] -= 1

    async def _segmented(
        self,
        session: aiohttp.ClientSession,
        item: WorkItem,
        report: Report,
        record: _state.Record,
        first: aiohttp.ClientResponse | None = None,
        count: int = 0,
    ) -> int:
        """The segmented path; a server breaking its rules sends the file down one stream."""
        try:
            return await _segments.download(
                self, session, item, report, record, first=first, count=count
            )
        except _segments.Fallback as exc:
            item.segments_off = True
            report(PatchDownloadInfo(note=f"downloading in one stream: {exc}"))
            raise _RestartFromZero from exc

    def _check_response(
        self,
        resp: aiohttp.ClientResponse,
        item: WorkItem,
        offset: int,
        record: _state.Record | None,
    ) -> int | None:
        """The expected final size; raises for an unusable answer."""
        encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
        length = None if encoded else resp.content_length
        if resp.status == 200:
            return length
        if resp.status == 206 and offset:
            parsed = parse_content_range(resp.headers.get("Content-Range"))
            if parsed is None or parsed[2] is None:
                raise _RestartFromZero
            start, end, total = parsed[0], parsed[1], parsed[2]
            expected_total = record.total if record else None
            if (
                start != offset
                or end != total - 1
                or (expected_total is not None and total != expected_total)
                or (length is not None and length != end - start + 1)
            ):
                raise _RestartFromZero
            return total
        if resp.status == 416 and offset:
            raise _RestartFromZero
        if resp.status == 206:
            raise HTTPStatusError(
                "HTTP 206 Partial Content to a request for the whole file",
                status=206,
                url=redact_url(item.url),
            )
        raise http_error(resp.status, resp.reason, resp.headers, redact_url(item.url))

    def _name_from_server(
        self, resp: aiohttp.ClientResponse, item: WorkItem, report: Report, claim: Claim
    ) -> None:
        disposition = resp.content_disposition
        if disposition is None or not disposition.filename:
            return
        name = sanitize_filename(disposition.filename)
        if not name or name == item.name:
            return
        new_path = item.dest / name
        if not claim(new_path):
            raise FileSystemError(
                f"the server names the file {name!r}, which another download of this batch "
                "writes (or a name that differs only in case or accents: one file on macOS and "
                "Windows); give this one a FileConfig(filename=...)",
                url=redact_url(item.url),
            )
        if item.locks is not None and name not in item.locked:
            if not item.locks.try_lock(name):
                raise FileSystemError(
                    f"the server names the file {name!r}, which another process is writing "
                    "into this folder; give this one a FileConfig(filename=...)",
                    url=redact_url(item.url),
                )
            item.locked.append(name)
        item.rename(name)
        item.server_named = True
        report(PatchDownloadInfo(path=new_path))

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        item: WorkItem,
        report: Report,
        progress: _Progress,
        offset: int,
        total: int | None,
        resumable: bool,
    ) -> int:
        final = item.path
        # A string, not a Path: only system calls use it (a Path costs ~2 us per file).
        part = f"{final}{_state.PART_SUFFIX}"
        hasher = item.checksum.new_hasher() if item.checksum else None
        done = offset
        # IN_PROGRESS goes with the first chunk that does not end the body: a small file (one
        # read) goes from PENDING to COMPLETED in one report, which then carries these fields.
        # Every report is applied to the records and handed to the tracker; this one was a third
        # of a small batch's.  A resume announces at once: hashing its prefix can take a while.
        announced = bool(offset)
        if announced:
            report(self._in_progress(resp, total, offset, offset))
        else:
            progress.http_status, progress.resumed_from = resp.status, 0
        completed = False
        try:
            # Plain blocking writes to a raw descriptor on purpose: they land in the page cache in
            # microseconds, and a thread hop per chunk (or a file object per file) costs more.
            # Only the file operations are wrapped: a network OSError must stay a network error.
            fd, unnamed = self._open_target(item, part, offset=offset, resumable=resumable)
            shown = final if unnamed else part  # the path an error message names
            try:
                if offset:
                    try:
                        os.ftruncate(fd, offset)
                        if hasher is not None:
                            _state.hash_prefix(fd, hasher, offset)
                        os.lseek(fd, offset, os.SEEK_SET)
                    except OSError as exc:
                        raise file_error(part, exc) from exc
                read = Body(resp).read
                size = self.chunk_size
                while chunk := await read(size):
                    if total is not None and done + len(chunk) > total:
                        # Checked before writing, so the partial file stays a true prefix.
                        raise IncompleteBodyError(
                            f"the server sent more than the announced {total} bytes",
                            url=redact_url(item.url),
                        )
                    try:
                        _write_all(fd, chunk)
                    except OSError as exc:
                        raise file_error(shown, exc) from exc
                    if hasher is not None:
                        hasher.update(chunk)
                    done += len(chunk)
                    # The last chunk of a known size goes without: COMPLETED follows at once
                    # with the count (a small file is often one chunk).
                    if done != total:
                        if announced:
                            report(PatchDownloadInfo(bytes_downloaded=done))
                        else:
                            announced = True
                            report(self._in_progress(resp, total, done, offset))
                            progress.http_status = progress.resumed_from = None
                if total is not None and done != total:
                    raise IncompleteBodyError(
                        f"the body ended after {done} of {total} bytes", url=redact_url(item.url)
                    )
                if hasher is not None:
                    item.check_digest(hasher.hexdigest())
                if unnamed:
                    try:
                        _link(fd, final, part)
                    except OSError as exc:
                        raise file_error(final, exc) from exc
                else:
                    _files.check_final(final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            try:
                os.close(fd)  # where a network file system reports a failed write
            except OSError as exc:
                raise file_error(shown, exc) from exc
            if not unnamed:
                try:
                    os.replace(part, final)
                except OSError as exc:
                    raise file_error(final, exc) from exc
            completed = True
        finally:
            if not completed and not resumable:
                # Without a validator these bytes can never be continued safely.
                with contextlib.suppress(OSError):
                    os.unlink(part)
        return done

    @staticmethod
    def _in_progress(
        resp: aiohttp.ClientResponse, total: int | None, done: int, offset: int
    ) -> PatchDownloadInfo:
        return PatchDownloadInfo(
            status=DownloadStatus.IN_PROGRESS,
            total_bytes=total,
            bytes_downloaded=done,
            resumed_from=offset,
            http_status=resp.status,
        )

    def _open_target(
        self, item: WorkItem, part: str, *, offset: int, resumable: bool
    ) -> tuple[int, bool]:
        """A descriptor to write the body to, and whether it is an unnamed file (see _link)."""
        if not resumable and not offset and item.dest not in self._no_unnamed:
            # Nothing to resume: an unnamed file, named only once complete, leaves nothing
            # behind even if the process is killed, and saves a rename (~6 % of a batch of
            # small files on ext4).
            fd = _open_unnamed(item.dest)
            if fd is not None:
                return fd, True
            self._no_unnamed.add(item.dest)
        try:
            return _files.open_part(part, item.dest, resume=bool(offset)), False
        except OSError as exc:
            raise file_error(part, exc) from exc

    def _finish_record(self, item: WorkItem) -> None:
        if not item.server_named:
            item.forget_record()
            return
        # The name came from the server: keep it, so that a re-run finds the file offline.
        with contextlib.suppress(OSError):
            item.save_record(_state.Record(url=item.url, name=item.name, complete=True))


def _found(size: int) -> PatchDownloadInfo:
    """The report of a file found complete where it goes: nothing was requested."""
    return PatchDownloadInfo(
        status=DownloadStatus.COMPLETED,
        bytes_downloaded=size,
        total_bytes=size,
        resumed_from=size,
        finished_at=time.time(),
        from_cache=True,
        attempts=0,
    )


def _partial_size(item: WorkItem) -> int:
    return _regular_size(_state.part_path(item.path))


def _regular_size(path: str | Path) -> int:
    """The size of the plain file at ``path``; 0 for none, a link or anything else."""
    try:
        info = os.lstat(path)
    except OSError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


#: Linux names an unnamed (O_TMPFILE) file through /proc; elsewhere every file gets a ``.part``.
_UNNAMED = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
#: What open(O_TMPFILE) fails with where the file system or kernel has no unnamed files.
_NO_UNNAMED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})


def _open_unnamed(dest: Path) -> int | None:
    """An unnamed file in ``dest``, open for writing; None where there are none (see _link)."""
    if not _UNNAMED:
        return None
    try:
        return _files.open_in(dest, dest, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _NO_UNNAMED:
            return None
        raise file_error(dest, exc) from exc


def _link(fd: int, final: Path, part: str) -> None:
    """Give the unnamed file ``fd`` the name ``final``, replacing a file there."""
    source = f"/proc/self/fd/{fd}"
    try:
        # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N is how a process without privileges
        # names an O_TMPFILE file; os.link calls linkat only when given a folder descriptor,
        # which an absolute source path makes it ignore.
        os.link(source, final, src_dir_fd=fd)
    except FileExistsError:
        # overwrite=True, or a file appeared meanwhile: name it apart, then rename over it,
        # unless a link or a folder is in the way (checked only now: a new name needs no stat).
        _files.check_final(final)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        os.link(source, part, src_dir_fd=fd)
        os.replace(part, final)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    written = os.write(fd, data)
    if written != len(data):  # rare (a signal, a nearly full disk): write the rest
        view = memoryview(data)
        while written < len(data):
            written += os.write(fd, view[written:])


def _hash_file(path: Path, checksum: Checksum, size: int) -> str:
    hasher = checksum.new_hasher()
    fd = _files.open_final(path)
    try:
        _state.hash_prefix(fd, hasher, size)
    finally:
        os.close(fd)
    return hasher.hexdigest()
