"""``DownloadManager``: one HTTP session, a priority queue and a pool of workers for a batch."""

from __future__ import annotations

import asyncio
import functools
import os
import urllib.request
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import aiohttp

from . import _busy, _schedulers, _state, _storage
from ._errors import InvalidConfigError
from ._hooks import Dispatcher, EventKind, Hooks
from ._models import (
    DownloadInfo,
    DownloadStatus,
    FileConfig,
    PatchDownloadInfo,
    Results,
    check_int,
)
from ._naming import check_explicit_filename, fallback_name, fold_name, name_from_url
from ._origins import Origins
from ._tracker import DownloadTracker, NullTracker, Tracker
from ._urls import check_url, redact_url
from ._version import USER_AGENT
from ._worker import DownloadWorker, Report, WorkItem

#: Connections to one host at a time: browsers use 6, aria2c allows at most 16 per download.
DEFAULT_MAX_PER_HOST = 8


class DownloadManager:
    """Runs a batch: every queued item is downloaded by at most ``max_workers`` workers.

    Use it as an async context manager; it owns (and closes) the ``aiohttp.ClientSession``
    unless one is injected with ``client=``::

        async with DownloadManager(dest="data", max_workers=4) as manager:
            manager.add_to_queue("https://example.org/a.csv")
            results = await manager.run()
    """

    def __init__(
        self,
        *,
        dest: str | Path | _storage.Storage = ".",
        max_workers: int = 3,
        client: aiohttp.ClientSession | None = None,
        tracker: Tracker | None = None,
        worker: DownloadWorker | None = None,
        headers: dict[str, str] | None = None,
        max_per_host: int | None = None,
        hooks: Hooks | None = None,
        scheduler: _schedulers.Scheduler | str | None = None,
    ) -> None:
        check_int("max_workers", max_workers, 1)
        max_per_host = per_host_cap(max_per_host, max_workers)
        check_int("max_per_host", max_per_host, 1)
        #: Connections open to one host at a time, segments of a large file included.
        self.max_per_host = max_per_host
        self.worker = worker or DownloadWorker()
        folder, storage = _storage.resolve(dest)
        #: Where files go when ``dest`` is not a local folder (an object store, say).
        self.storage = storage
        #: The local folder; for a storage, an empty relative path (paths are then bare names).
        self.dest = folder if folder is not None else Path()
        if storage is not None and (self.worker.extract or self.worker.processors):
            raise InvalidConfigError(
                f"extract and processors need a local dest folder, not {storage.location('')}"
            )
        self.max_workers = max_workers
        self.tracker: Tracker = tracker if tracker is not None else NullTracker()
        self.headers = dict(headers or {})
        self._client = client
        self._owns_client = client is None
        # A tracker built on DownloadTracker is a state store already: keeping a second copy
        # of every record doubled the per-report cost (15% of a batch of small files).
        self._store = (
            self.tracker if isinstance(self.tracker, DownloadTracker) else DownloadTracker()
        )
        #: The tracker to tell besides the store, when it is not the store itself.
        self._also: Tracker | None = None if self._store is self.tracker else self.tracker
        # Per queued URL only its DownloadInfo (in the store) is kept; a WorkItem is built when a
        # worker takes it, so a 100,000-line manifest does not hold 100,000 of them.  The
        # scheduler holds the URL strings only.
        self._scheduler = _schedulers.resolve(scheduler)
        #: Lifecycle hooks, and their delivery while ``run`` runs.
        self.hooks = Hooks.of(hooks)
        self._dispatch: Dispatcher | None = None
        self._order: list[str] = []
        self._queued: set[str] = set()
        #: Only for items given as FileConfig, and for URLs with a state record on disk.
        self._configs: dict[str, FileConfig] = {}
        self._records: dict[str, _state.Record] = {}
        #: Set by ``queue_all`` when ``dest`` has no state folder: then no URL has a record, and
        #: a failed lookup per URL (a hash, a path, an open) is skipped.
        self._no_records = False
        #: Where the files of the running batch came from (``_origins``); local folders only.
        self._origins: Origins | None = None
        #: Each file's folded name (``fold_name``): the URL that claimed it and the name as
        #: given.  Names that fold alike are one file on macOS and Windows, so one claim.
        self._names: dict[str, tuple[str, str]] = {}
        #: Items handed back because another process holds their file: taken again (and then
        #: waited for) once the queue is empty, so workers meanwhile do other files.
        self._deferred: deque[WorkItem] = deque()

    async def __aenter__(self) -> DownloadManager:
        if self._client is None:
            self._client = self._make_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this manager created it."""
        if self._owns_client and self._client is not None:
            await self._client.close()
            self._client = None

    def _make_session(self) -> aiohttp.ClientSession:
        return make_session(self.max_workers, self.max_per_host, self.worker.chunk_size)

    def add_to_queue(self, item: str | FileConfig) -> DownloadInfo:
        """Queue one URL or ``FileConfig``; returns its initial record (status QUEUED).

        The same URL queued twice for the same file is downloaded once.  Raises
        ``InvalidConfigError`` (a ``ValueError``) for a bad item or a clash of final paths.
        """
        url, config = _as_url_and_config(item)
        if (
            self.storage is not None
            and config is not None
            and (config.extract or config.extract_to)
        ):
            raise InvalidConfigError(
                f"{redact_url(url)}: extract needs a local dest folder, "
                f"not {self.storage.location('')}"
            )
        filename = config.filename if config is not None else None
        record = (
            None if self._no_records or self.storage is not None else _state.load(self.dest, url)
        )
        if filename is not None:
            name = check_explicit_filename(filename)
        elif record is not None and record.name:
            name = record.name
        else:
            name = name_from_url(url) or fallback_name(url)
        path = self.dest / name
        if url in self._queued:
            known = self._store.get(url)
            if known.path != path:
                raise InvalidConfigError(
                    f"{redact_url(url)} is listed twice with different file names "
                    f"({known.filename!r} and {name!r}); download it once and copy the file"
                )
            self._order.append(url)
            return known
        folded = self._fold(name)
        taken = self._names.get(folded)
        if taken is not None:
            owner, theirs = taken
            if theirs == name:
                raise InvalidConfigError(
                    f"{redact_url(url)} and {redact_url(owner)} would both be saved as "
                    f"{path}; give one of them a FileConfig(filename=...)"
                )
            raise InvalidConfigError(
                f"{redact_url(url)} and {redact_url(owner)} would be saved as {name!r} and "
                f"{theirs!r}, one file on macOS and Windows (they ignore case, and how accents "
                "are composed); give one of them a FileConfig(filename=...)"
            )
        self._names[folded] = (url, name)
        self._queued.add(url)
        self._order.append(url)
        if config is not None:
            self._configs[url] = config
        if record is not None:
            self._records[url] = record
        priority = config.priority if config is not None else 1
        info = DownloadInfo(
            url=url,
            path=path,
            priority=priority,
            total_bytes=config.size_bytes if config is not None else None,
            location=None if self.storage is None else self.storage.location(name),
        )
        self._store.register_download(info)
        if self._also is not None:
            self._also.register_download(info)
        self._scheduler.push(url, priority)
        return info

    @property
    def urls(self) -> tuple[str, ...]:
        """The queued URLs in input order, duplicates included (as ``run`` returns them)."""
        return tuple(self._order)

    def info(self, url: str) -> DownloadInfo:
        """The latest record of the queued ``url`` (``KeyError`` if it is not queued)."""
        return self._store.get(url)

    def _next_item(self) -> WorkItem | None:
        """The item the scheduler picks next (by default: the highest priority), or None.

        Items handed back because another process holds their file come last.
        """
        url = self._scheduler.pop()
        if url is None:
            if self._deferred:
                item = self._deferred.popleft()
                item.may_defer = False
                return item
            return None
        config = self._configs.pop(url, None) or FileConfig._of_checked_url(url)
        record = self._records.pop(url, None)
        # A storage keeps the URL's name (or the config's): a re-run must find the object
        # without a request, and there is no record to remember the server's name by.
        fixed = config.filename is not None or self.storage is not None
        path = self._store.get(url).path
        return WorkItem(
            config=config,
            dest=self.dest,
            name=path.name,
            _path=path,
            name_fixed=fixed,
            # One shared dict unless this item has headers of its own.
            headers={**self.headers, **config.headers} if config.headers else self.headers,
            checksum=config.parsed_checksum,
            has_record=record is not None,
            server_named=not fixed and record is not None and record.name != name_from_url(url),
            may_defer=True,
            storage=self.storage,
            origins=self._origins,
        )

    def _claim(self, url: str, path: Path) -> bool:
        owner, _ = self._names.setdefault(self._fold(path.name), (url, path.name))
        # Object keys are not local paths: other batches' folders are no concern of theirs.
        return owner == url and (self.storage is not None or _busy.add(self, path))

    def _fold(self, name: str) -> str:
        """The key that two names of one file share (object keys: the name itself)."""
        return name if self.storage is not None else fold_name(name)

    def _reporter(self, url: str) -> Report:
        store, also, dispatch = self._store, self._also, self._dispatch
        if also is None and dispatch is None:
            return functools.partial(store.patch_download, url)

        def report(patch: PatchDownloadInfo) -> None:
            store.patch_download(url, patch)
            if also is not None:
                also.patch_download(url, patch)
            # Only status and attempt changes make events: per-chunk reports pass at once.
            if dispatch is not None and (patch.status is not None or patch.attempts is not None):
                dispatch.saw(patch, store.get(url))

        return report

    async def run(self) -> Results:
        """Download everything queued; returns one ``DownloadInfo`` per queued item, in order.

        Failures are reported in the results, never raised.  Cancelling this coroutine cancels
        every download (partial files stay for resume) and re-raises ``CancelledError``.
        """
        if self._client is None:
            raise RuntimeError("use 'async with DownloadManager(...)' before run()")
        if self.storage is None:
            _busy.reserve(self, self.dest, (name for _, name in self._names.values()))
            # Keyed by this batch's folded names: memory follows the batch, not the folder.
            self._origins = Origins(self.dest, self._names)
        self.worker.start_batch()
        if self.hooks is not None and self.hooks.subscribed():
            self._dispatch = Dispatcher(self.hooks)
            for url in dict.fromkeys(self._order):
                self._dispatch.emit(EventKind.QUEUED, self._store.get(url))
        self.tracker.start()
        try:
            count = min(self.max_workers, len(self._scheduler))
            async with asyncio.TaskGroup() as group:
                for _ in range(count):
                    group.create_task(self._work(self._client))
        except asyncio.CancelledError:
            self._cancel_queued()
            raise
        finally:
            _busy.release(self)
            if self._origins is not None:
                self._origins.close()
                self._origins = None
            self.tracker.close()
            if self._dispatch is not None:
                dispatch, self._dispatch = self._dispatch, None
                await dispatch.close()
        return Results([self._store.get(url) for url in self._order])

    def _cancel_queued(self) -> None:
        cancelled = PatchDownloadInfo(status=DownloadStatus.CANCELLED, error="cancelled")
        for info in self._store.downloads():
            if not info.is_terminal():
                self._reporter(info.url)(cancelled)

    async def _work(self, session: aiohttp.ClientSession) -> None:
        while (item := self._next_item()) is not None:
            claim = functools.partial(self._claim, item.url)
            done = await self.worker.download(session, item, self._reporter(item.url), claim)
            if done is False:  # another process has the file: come back to it later
                self._deferred.append(item)


def per_host_cap(max_per_host: int | None, max_workers: int) -> int:
    """The connections per host a batch gets: ``max_per_host``, or by default 8 or more.

    A batch asking for 16 files at a time from one host gets 16 connections: with a cap below
    ``max_workers``, workers would queue for a connection while others wait on a slow server's
    first byte (2000 files at 20 ms each took 2x as long).
    """
    return max(DEFAULT_MAX_PER_HOST, max_workers) if max_per_host is None else max_per_host


def make_session(max_workers: int, max_per_host: int, chunk_size: int) -> aiohttp.ClientSession:
    """The engine's HTTP session: its headers, timeouts, buffers and connection limits."""
    connector = aiohttp.TCPConnector(
        limit=max(max_workers, max_per_host, 10),
        limit_per_host=max_per_host,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        # Bytes as stored: a decoded body has no length to check or resume against.
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        # The worker applies per-request timeouts; the session must not add a total one.
        timeout=aiohttp.ClientTimeout(total=None),
        # Room for a few reads, so the socket keeps flowing while a chunk is written.
        read_bufsize=4 * chunk_size,
        trust_env=_env_matters(),
    )


def _env_matters() -> bool:
    """True when proxy variables or a netrc file exist, so that ``trust_env`` can change a request.

    aiohttp's ``trust_env`` costs two thread hops per request (netrc and proxy lookups); 2000
    small files took 2.6 s with it and 2.2 s without (benchmarks/README.md).
    """
    if urllib.request.getproxies() or os.environ.get("NETRC"):
        return True
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return False
    return (home / ".netrc").exists() or (home / "_netrc").exists()


def _as_url_and_config(item: object) -> tuple[str, FileConfig | None]:
    """The URL of an item, and its FileConfig when it has one (a bare URL needs none)."""
    if isinstance(item, FileConfig):
        return item.url, item
    if isinstance(item, str):
        try:
            return check_url(item), None
        except ValueError as exc:
            raise InvalidConfigError(f"bad item {item!r}: {exc}") from None
    raise InvalidConfigError(
        f"each item must be a URL string or an nbdl.FileConfig, not {type(item).__name__}: {item!r}"
    )


def queue_all(manager: DownloadManager, items: Iterable[str | FileConfig]) -> None:
    """Queue every item, naming the bad one (by position) if any is invalid."""
    # Records are written only while downloads run, and none runs while this queues.
    manager._no_records = manager.storage is not None or not _state.has_records(manager.dest)
    try:
        for position, item in enumerate(items):
            try:
                manager.add_to_queue(item)
            except ValueError as exc:
                raise InvalidConfigError(f"item {position}: {exc}") from None
    finally:
        manager._no_records = False
