"""Runs the service's queue through the library's engine, ``max_workers`` items at a time.

The service is not a second engine: each started item is one ``DownloadManager`` batch of one
file, sharing the service's ``aiohttp.ClientSession`` (its connector caps connections per host)
and its ``DownloadWorker``.  Pausing or cancelling an item cancels its task; the engine keeps
the ``.part`` file and its record, so a resume (or a restart of the service) continues with a
``Range`` request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

from .._models import DownloadInfo, DownloadStatus, PatchDownloadInfo
from .._plan import EngineSettings
from ._store import ACTIVE, Item, Status, Store

log = logging.getLogger("nbdl.service")

_ENGINE_STATUS = {
    DownloadStatus.QUEUED: Status.PENDING,  # the engine's queue of one: it is starting
    DownloadStatus.PENDING: Status.PENDING,
    DownloadStatus.IN_PROGRESS: Status.IN_PROGRESS,
    DownloadStatus.COMPLETED: Status.COMPLETED,
    DownloadStatus.FAILED: Status.FAILED,
    DownloadStatus.CANCELLED: Status.CANCELLED,
}


class ItemTracker:
    """The engine's tracker for one item: its reports go to the store (and so to the stream)."""

    def __init__(self, store: Store, item: Item) -> None:
        self.store = store
        self.item = item

    def register_download(self, info: DownloadInfo) -> None:
        """The engine queued the item: nothing new to record."""

    def patch_download(self, url: str, patch: PatchDownloadInfo) -> None:
        """Copy the engine's report into the item (called per chunk: only records)."""
        item, store = self.item, self.store
        if patch.bytes_downloaded is not None:
            item.bytes_downloaded = patch.bytes_downloaded
        if patch.total_bytes is not None:
            item.total_bytes = patch.total_bytes
        if patch.attempts is not None:
            item.attempts = patch.attempts
        if patch.http_status is not None:
            item.http_status = patch.http_status
        if patch.started_at is not None:
            item.started_at = patch.started_at
        if patch.finished_at is not None:
            item.finished_at = patch.finished_at
        if patch.note is not None:
            item.note = patch.note
        if patch.error is not None:
            item.error = patch.error
        if patch.error_kind is not None:
            item.error_kind = patch.error_kind.value
        if patch.path is not None and patch.path.name != item.name:
            store.rename(item, patch.path.name)
        if patch.status is not None:
            store.set_status(item, _ENGINE_STATUS[patch.status])
        else:
            store.changed(item)

    def start(self) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to release."""


class Runner:
    """Starts queued items by priority, at most ``max_workers`` at once."""

    def __init__(
        self,
        store: Store,
        *,
        session: aiohttp.ClientSession,
        engine: EngineSettings,
        max_workers: int,
        run_downloads: bool = True,
    ) -> None:
        self.store = store
        self.session = session
        self.engine = engine
        # One worker for every item: its count of open connections per host spans them all, so
        # a large file's automatic segments leave room for the other items on that host.
        self.worker = engine.worker()
        self.max_workers = max_workers
        self.run_downloads = run_downloads
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: What a cancelled task's item becomes: paused, cancelled, or queued (service stopping).
        self._stop_as: dict[int, Status] = {}
        self._wake = asyncio.Event()
        self._closing = False

    @property
    def running(self) -> int:
        """Items being downloaded now."""
        return len(self._tasks)

    def wake(self) -> None:
        """Something changed: look for items to start."""
        self._wake.set()

    async def run(self) -> None:
        """Start items as slots free up, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.run_downloads and not self._closing and len(self._tasks) < self.max_workers:
                item = self.store.next_queued()
                if item is None:
                    break
                self._start(item)

    def _start(self, item: Item) -> None:
        item.error = item.error_kind = item.note = None
        item.http_status = None
        item.finished_at = None
        self.store.set_status(item, Status.PENDING)
        task = asyncio.create_task(self._download(item), name=f"nbdl-service-item-{item.id}")
        self._tasks[item.id] = task

    async def _download(self, item: Item) -> None:
        tracker = ItemTracker(self.store, item)
        try:
            async with self.engine.manager(
                self.store.dest, tracker=tracker, session=self.session, worker=self.worker
            ) as manager:
                manager.add_to_queue(item.config)
                await manager.run()
        except asyncio.CancelledError:
            status = self._stop_as.pop(item.id, Status.QUEUED)
            item.error = "cancelled" if status is Status.CANCELLED else None
            item.error_kind = None
            item.finished_at = time.time() if status is Status.CANCELLED else None
            self.store.set_status(item, status)
            # Swallowed: this task is only ever cancelled by ``stop``, which waits for it.
        except Exception as exc:  # a conflict or a bug must fail the item, not the service
            log.exception("item %s failed outside the engine", item.id)
            item.error = f"{type(exc).__name__}: {exc}"
            item.finished_at = time.time()
            self.store.set_status(item, Status.FAILED)
        finally:
            self._tasks.pop(item.id, None)
            if item.status in ACTIVE:  # the engine always ends in a terminal state; be sure
                self.store.set_status(item, Status.FAILED)
            self.wake()

    async def stop(self, item: Item, status: Status) -> None:
        """Stop ``item``'s download, if running, leaving it in ``status``; else just set it."""
        task = self._tasks.get(item.id)
        if task is None:
            self.store.set_status(item, status)
            return
        self._stop_as[item.id] = status
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([task])
        if item.status is not status:  # the task ended on its own just before the cancel
            self._stop_as.pop(item.id, None)

    async def close(self) -> None:
        """Stop every download; the items stay queued, to resume at the next start."""
        self._closing = True
        tasks = list(self._tasks.items())
        for item_id, task in tasks:
            self._stop_as[item_id] = Status.QUEUED
            task.cancel()
        if tasks:
            await asyncio.wait([task for _, task in tasks])
