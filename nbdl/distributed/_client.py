"""``nbdl.distributed.fetch``: a manifest cut into shards, each run by nbdl's engine on a worker.

The client reads the manifest lazily, keeps a bounded number of shards in flight, feeds the usual
display (``tracker="auto"``) from progress the workers publish a few times a second
(``Worker.log_event`` + ``Client.subscribe_topic``), and merges each shard's result in input order.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import pickle
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from distributed import Client, Future
from distributed.client import FutureCancelledError

from .._errors import ErrorKind, InvalidConfigError
from .._fetch import TrackerChoice
from .._manager import DownloadManager, queue_all
from .._models import DownloadInfo, DownloadStatus, ExtractLimits, PatchDownloadInfo, check_int
from .._plan import EngineSettings, check_settings
from .._processors import Processor
from .._select import resolve_tracker
from .._storage import is_object_url, resolve
from .._tracker import NullTracker, Tracker
from .._worker import RetryPolicy
from ._results import ClusterResults, ShardSummary
from ._shard import (
    FILE_FIELDS,
    SessionPlugin,
    ShardOutcome,
    ShardSpec,
    cancel_run,
    logger,
    run_shard,
)
from ._stream import Item, Manifest, Shard, is_manifest_path, read_items, shards

#: Items per shard by default: img2dataset's shard size, a few seconds to minutes of one worker.
DEFAULT_SHARD_SIZE = 10_000
#: ``keep="auto"`` keeps every file's record up to this many items, only failures beyond.
KEEP_ALL_UP_TO = 100_000
_ITEM = re.compile(r"^item (\d+):")
#: Submissions of one shard at most: a lost worker costs one (Dask itself also retries a task
#: whose worker died, up to distributed.scheduler.allowed-failures).
SHARD_ATTEMPTS = 3
#: Seconds to wait for a first worker when the cluster has none.
WAIT_FOR_WORKERS = 60
Keep = Literal["auto", "all", "failures"]


async def fetch(
    manifest: Manifest,
    dest: str | Path = ".",
    *,
    client: Client,
    shard_size: int = DEFAULT_SHARD_SIZE,
    shards_in_flight: int | None = None,
    keep: Keep = "auto",
    tracker: TrackerChoice = "auto",
    max_workers: int = 16,
    max_per_host: int | None = None,
    retries: int | RetryPolicy = 3,
    # The same name as nbdl.fetch's: it bounds each download, not this call.
    timeout: float | None = None,  # noqa: ASYNC109
    read_timeout: float | None = 60,
    overwrite: bool = False,
    headers: Mapping[str, str] | None = None,
    segments: int | None = None,
    extract: bool = False,
    extract_limits: ExtractLimits | None = None,
    processors: Sequence[Processor] = (),
) -> ClusterResults:
    """Download a manifest on a Dask cluster; returns one result per item, in input order.

    ``manifest`` is an iterable of URLs and/or ``nbdl.FileConfig`` (a generator is read lazily),
    or the path of a manifest file (text, CSV or JSON, as ``nbdl fetch -i`` reads). It is cut
    into shards of ``shard_size`` items; each shard is one Dask task that runs nbdl's engine on
    a worker's event loop, with ``max_workers`` files at once.  ``dest`` must be a folder every
    worker sees at the same path (a shared file system).

    ``client`` is a ``distributed.Client``: an asynchronous one made on this event loop (a
    notebook's) or an ordinary one.  ``max_per_host`` caps the connections to one host across
    the whole cluster: each worker thread gets ``max_per_host // threads`` (at least 1).
    ``shards_in_flight`` (default: twice the cluster's threads) bounds what the client holds.
    ``keep="all"`` returns every file's ``DownloadInfo``; ``"failures"`` only those that did not
    complete (counts in ``results.shards``); ``"auto"`` keeps all up to 100,000 items.  The
    other settings mean what they mean for ``nbdl.fetch``.
    """
    if not isinstance(client, Client):
        raise InvalidConfigError(f"client must be a distributed.Client, got {client!r}")
    if max_per_host is None:
        max_per_host = 8  # for the whole cluster: one machine's default, shared out below
    checked = check_settings(
        max_workers=max_workers,
        retries=retries,
        timeout=timeout,
        read_timeout=read_timeout,
        overwrite=overwrite,
        headers=headers,
        segments=segments,
        max_per_host=max_per_host,
        extract=extract,
        extract_limits=extract_limits,
        processors=processors,
    )
    check_int("shard_size", shard_size, 1)
    if shards_in_flight is not None:
        check_int("shards_in_flight", shards_in_flight, 1)
    if keep not in ("auto", "all", "failures"):
        raise InvalidConfigError(f"keep must be 'auto', 'all' or 'failures', got {keep!r}")
    target, folder = _folder(dest)
    loop = asyncio.get_running_loop()
    if client.asynchronous and getattr(client.loop, "asyncio_loop", None) is not loop:
        raise InvalidConfigError(
            "this asynchronous Client runs on another event loop; make it in this one "
            "(Client(..., asynchronous=True) in the notebook) or pass an ordinary Client"
        )
    items, detail = _plan(manifest, keep)
    threads = sum((await _call(client, client.nthreads)).values())
    if threads < 1:
        # A cluster just started, or scaled to zero: give its first worker a moment.
        try:
            await _call(client, client.wait_for_workers, 1, timeout=WAIT_FOR_WORKERS)
        except TimeoutError:
            raise RuntimeError(
                f"the Dask cluster has no workers (waited {WAIT_FOR_WORKERS} s); start some, "
                "then run again"
            ) from None
        threads = sum((await _call(client, client.nthreads)).values())
    # Each worker thread runs its shards with its share of the cluster's per-host cap.
    settings = replace(checked, max_per_host=max(1, max_per_host // threads))
    await _call(client, client.register_plugin, SessionPlugin(), "nbdl-sessions")
    run = _Run(
        client=client,
        loop=loop,
        dest=folder,
        target=target,
        settings=settings,
        detail=detail,
        tracker=resolve_tracker(tracker),
        limit=shards_in_flight or 2 * threads,
    )
    return await run.go(shards(items, shard_size))


def _folder(dest: object) -> tuple[str, Path]:
    """``dest`` as the workers' engines take it, and the folder result paths start from."""
    if not isinstance(dest, str | Path) or str(dest) == "":
        raise InvalidConfigError(f"dest must be a folder path or an object-store URL, got {dest!r}")
    if is_object_url(dest):
        assert isinstance(dest, str)
        if dest.lower().startswith("memory://"):
            raise InvalidConfigError(
                f"dest {dest!r}: every worker process has a memory:// store of its own; use a "
                "shared folder or an object store (s3://, gs://, az://)"
            )
        resolve(dest)  # a bad URL, or obstore missing, is said here, before any task
        return dest, Path()  # objects are named by bare file names
    # Workers see the folder by this path: a relative one would be relative to their own cwd.
    folder = Path(dest).expanduser().absolute()
    return str(folder), folder


def _plan(manifest: Manifest, keep: Keep) -> tuple[Iterable[Item], bool]:
    """The items to read, and whether every file's record is kept (``detail``)."""
    if is_manifest_path(manifest):
        # A first pass validates every line (a bad one costs no request, as for nbdl.fetch)
        # and counts them; the second pass streams them into shards.
        total = sum(1 for _ in read_items(manifest))
        detail = keep == "all" or (keep == "auto" and total <= KEEP_ALL_UP_TO)
        return _Reread(manifest), detail
    items = read_items(manifest)
    if keep != "auto":
        return items, keep == "all"
    if isinstance(manifest, Sequence):
        return items, len(manifest) <= KEEP_ALL_UP_TO
    # A generator: look ahead, holding at most KEEP_ALL_UP_TO + 1 items.
    head = list(itertools.islice(items, KEEP_ALL_UP_TO + 1))
    return itertools.chain(head, items), len(head) <= KEEP_ALL_UP_TO


@dataclass(frozen=True, slots=True)
class _Reread:
    manifest: Manifest

    def __iter__(self) -> Iterator[Item]:
        return read_items(self.manifest)


async def _call(client: Client, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``method(*args, **kwargs)`` of ``client``: awaited, or run in a thread.

    An ordinary client blocks while its own loop thread works; a thread keeps ours running.
    """
    if client.asynchronous:
        result = method(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result
    return await asyncio.to_thread(method, *args, **kwargs)


@dataclass
class _InFlight:
    shard: Shard
    future: Future[ShardOutcome]
    #: Runs of this shard so far: a shard whose worker (and so its scattered items) was lost
    #: is submitted again, up to SHARD_ATTEMPTS times.
    attempts: int = 1
    #: The display's row of this shard (``detail=False``), else None.
    row: str | None = None
    #: The records of the shard's items with ``detail`` (without it none is kept here).
    infos: list[DownloadInfo] = field(default_factory=list)


@dataclass
class _Run:
    client: Client
    loop: asyncio.AbstractEventLoop
    dest: Path
    #: ``dest`` as the engines take it: a folder's absolute path or an object-store URL.
    target: str
    settings: EngineSettings
    detail: bool
    tracker: Tracker
    limit: int
    topic: str = field(default_factory=lambda: f"nbdl-progress-{uuid.uuid4().hex}")
    in_flight: dict[int, _InFlight] = field(default_factory=dict)
    done: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    kept: dict[int, list[DownloadInfo]] = field(default_factory=dict)
    summaries: list[ShardSummary] = field(default_factory=list)
    #: The engine's queue on the client, only to validate and name items (and, with
    #: ``detail``, to register them with the display): nothing is downloaded through it.
    names: DownloadManager | None = None

    async def go(self, pending: Iterator[Shard]) -> ClusterResults:
        # subscribe_topic, unsubscribe_topic and add_done_callback carry no annotations.
        untyped: Any = self.client
        untyped.subscribe_topic(self.topic, self._on_event)
        started = False
        try:
            while True:
                while len(self.in_flight) < self.limit:
                    shard = next(pending, None)
                    if shard is None:
                        break
                    await self._submit(shard)
                    if not started:
                        self.tracker.start()
                        started = True
                if not self.in_flight:
                    break
                await self._collect(await self.done.get())
        except BaseException:
            await self._cancel()
            raise
        finally:
            untyped.unsubscribe_topic(self.topic)
            if started:
                self.tracker.close()
        self.summaries.sort(key=lambda s: s.index)
        items = [info for index in sorted(self.kept) for info in self.kept[index]]
        return ClusterResults(items, shards=self.summaries, complete=self.detail)

    # -- submitting ------------------------------------------------------------------------
    async def _submit(self, shard: Shard) -> None:
        infos = self._register(shard)
        entry = _InFlight(shard, await self._task(shard))
        if self.detail:
            entry.infos = infos
        else:
            entry.row = f"nbdl-shard:{shard.index}"
            self.tracker.register_download(
                DownloadInfo(url=entry.row, path=self.dest / _shard_label(shard))
            )
        self.in_flight[shard.index] = entry

    async def _task(self, shard: Shard) -> Future[ShardOutcome]:
        """Scatter the shard's items to a worker and submit the task that downloads them."""
        spec = ShardSpec(
            topic=self.topic,
            index=shard.index,
            first=shard.first,
            dest=self.target,
            settings=self.settings,
            detail=self.detail,
        )
        # Scattered, the items reach a worker once and the scheduler's logs hold only a key;
        # pickled first, they are one frame (scatter would serialise a list item by item).
        payload = pickle.dumps(shard.items, protocol=pickle.HIGHEST_PROTOCOL)
        (items,) = await _call(self.client, self.client.scatter, [payload], hash=False)
        # A coroutine function: the worker awaits it on its event loop, and the future holds
        # what it returns (distributed's annotation says the coroutine).
        future: Future[ShardOutcome] = self.client.submit(
            run_shard,  # type: ignore[arg-type]
            spec,
            items,
            key=f"nbdl-shard-{self.topic[14:]}-{shard.index}-{uuid.uuid4().hex[:8]}",
            pure=False,
        )
        index = shard.index
        untyped: Any = future
        untyped.add_done_callback(
            lambda _: self.loop.call_soon_threadsafe(self.done.put_nowait, index)
        )
        return future

    def _register(self, shard: Shard) -> list[DownloadInfo]:
        """Validate and name the shard's items (a bad one stops the run, naming it).

        With ``detail`` one queue for the whole run registers every item with the display (and
        finds two items with one name anywhere in the manifest); else a fresh queue per shard
        keeps memory bounded, and names must be unique within a shard.
        """
        if not self.detail:
            try:
                queue_all(self._queue(NullTracker()), shard.items)
            except InvalidConfigError as exc:
                # queue_all counts from the shard's first item; say which manifest item it is.
                message = _ITEM.sub(lambda m: f"item {int(m[1]) + shard.first}:", str(exc), 1)
                raise InvalidConfigError(message) from None
            return []
        if self.names is None:
            self.names = self._queue(self.tracker)
        infos = []
        for position, item in enumerate(shard.items, start=shard.first):
            try:
                infos.append(self.names.add_to_queue(item))
            except ValueError as exc:
                raise InvalidConfigError(f"item {position}: {exc}") from None
        return infos

    # -- progress --------------------------------------------------------------------------
    def _on_event(self, event: tuple[float, Any]) -> None:
        # An ordinary client calls this on its own thread: hand the message to our loop.
        self.loop.call_soon_threadsafe(self._progress, event[1])

    def _progress(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        entry = self.in_flight.get(message.get("shard", -1))
        if entry is None:  # the shard's result came first: it is the authority
            return
        if entry.row is not None:
            count = len(entry.shard.items)
            note = f"{message['completed']:,}/{count:,} files"
            if message["failed"]:
                note += f", {message['failed']:,} failed"
            self.tracker.patch_download(
                entry.row,
                PatchDownloadInfo(
                    status=DownloadStatus.IN_PROGRESS,
                    bytes_downloaded=message["bytes"],
                    note=note,
                ),
            )
            return
        for values in message["files"]:
            self.tracker.patch_download(values[0], self._patch(values))

    def _patch(self, values: list[Any]) -> PatchDownloadInfo:
        fields = dict(zip(FILE_FIELDS, values, strict=False))
        del fields["url"]
        fields["status"] = DownloadStatus(fields["status"])
        if fields["error_kind"] is not None:
            fields["error_kind"] = ErrorKind(fields["error_kind"])
        # A note that went away (a retry that started) must be cleared, not kept.
        fields["note"] = fields["note"] or ""
        return PatchDownloadInfo(path=self.dest / values[len(FILE_FIELDS)], **fields)

    # -- results ---------------------------------------------------------------------------
    async def _collect(self, index: int) -> None:
        entry = self.in_flight[index]
        try:
            outcome: ShardOutcome = await _call(self.client, entry.future.result)
        except FutureCancelledError as exc:  # a CancelledError, but not ours: its data was lost
            problem: BaseException | None = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            problem = exc
        else:
            problem = None
        if problem is None:
            self._shard_done(entry, outcome)
        elif entry.attempts < SHARD_ATTEMPTS:
            # Idempotent: files done cost nothing, .part files resume.
            entry.attempts += 1
            entry.future = await self._task(entry.shard)
            return
        else:
            error = f"the shard task failed: {type(problem).__name__}: {problem}"
            self._shard_failed(entry, error)
        del self.in_flight[index]

    def _shard_done(self, entry: _InFlight, outcome: ShardOutcome) -> None:
        summary = outcome.summary
        if self.detail:
            infos = [info for _, info in outcome.infos]
            for info in infos:
                self.tracker.patch_download(info.url, _full_patch(info))
            self.kept[summary.index] = infos
        else:
            self.kept[summary.index] = [info for _, info in outcome.infos]
            self._finish_row(entry, summary.completed, summary.failed, summary.bytes)
        self.summaries.append(summary)

    def _shard_failed(self, entry: _InFlight, error: str) -> None:
        infos = entry.infos or self._register_again(entry.shard)
        failed = PatchDownloadInfo(
            status=DownloadStatus.FAILED, error=error, error_kind=ErrorKind.GENERIC
        )
        if self.detail:
            for info in infos:
                self.tracker.patch_download(info.url, failed)
        else:
            self._finish_row(entry, 0, len(infos), 0, error)
        self.kept[entry.shard.index] = [info.apply(failed) for info in infos]
        shard = entry.shard
        self.summaries.append(
            ShardSummary(
                index=shard.index,
                first=shard.first,
                count=len(shard.items),
                completed=0,
                failed=len(shard.items),
                cancelled=0,
                bytes=0,
                seconds=0.0,
                worker="",
                error=error,
            )
        )

    def _register_again(self, shard: Shard) -> list[DownloadInfo]:
        """The shard's items as records (not kept on the client without ``detail``)."""
        names = self._queue(NullTracker())
        return [names.add_to_queue(item) for item in shard.items]

    def _queue(self, tracker: Tracker) -> DownloadManager:
        """The engine the shards run, built here only to validate and name items.

        Built as the workers build theirs, so what the engine refuses (``extract`` into an
        object store, say) stops the run here, before any task, not in every shard.
        """
        return self.settings.manager(self.target, tracker=tracker)

    def _finish_row(
        self, entry: _InFlight, completed: int, failed: int, size: int, error: str | None = None
    ) -> None:
        assert entry.row is not None
        count = len(entry.shard.items)
        if failed and error is None:
            error = f"{failed:,} of {count:,} files failed"
        self.tracker.patch_download(
            entry.row,
            PatchDownloadInfo(
                status=DownloadStatus.COMPLETED if completed == count else DownloadStatus.FAILED,
                bytes_downloaded=size,
                total_bytes=size,
                note=f"{completed:,}/{count:,} files",
                error=error,
            ),
        )

    async def _cancel(self) -> None:
        futures = [entry.future for entry in self.in_flight.values()]
        cancelled = PatchDownloadInfo(status=DownloadStatus.CANCELLED, error="cancelled")
        for entry in self.in_flight.values():
            urls = [entry.row] if entry.row is not None else [i.url for i in entry.infos]
            for url in urls:
                self.tracker.patch_download(url, cancelled)
        if futures:
            # Shielded: this runs while the cell's task is being cancelled.
            await asyncio.shield(self._stop_workers(futures))

    async def _stop_workers(self, futures: list[Future[ShardOutcome]]) -> None:
        await _call(self.client, self.client.cancel, futures)
        # A released key does not stop a running task: each worker cancels its shards itself.
        try:
            await asyncio.wait_for(_call(self.client, self.client.run, cancel_run, self.topic), 10)
        except Exception as exc:  # TimeoutError included; a lost worker stops anyway
            logger.warning("nbdl: could not stop every worker's shards: %s", exc)


def _shard_label(shard: Shard) -> str:
    last = shard.first + len(shard.items) - 1
    return f"shard {shard.index} (items {shard.first:,}-{last:,})"


def _full_patch(info: DownloadInfo) -> PatchDownloadInfo:
    return PatchDownloadInfo(
        status=info.status,
        path=info.path,
        bytes_downloaded=info.bytes_downloaded,
        total_bytes=info.total_bytes,
        attempts=info.attempts,
        error=info.error,
        error_kind=info.error_kind,
        http_status=info.http_status,
        started_at=info.started_at,
        finished_at=info.finished_at,
        resumed_from=info.resumed_from,
        from_cache=info.from_cache,
        note=info.note or "",
        output=info.output,
        served_by=info.served_by,
    )
