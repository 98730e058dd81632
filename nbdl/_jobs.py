"""``nbdl.start``: a batch that downloads in the background while the user runs other cells.

A kernel interrupt cancels the cell that is running, not tasks made with ``create_task``, so the
``DownloadJob`` is the handle: ``await job``, ``job.cancel()``, ``job.done()``, ``job.results``.

Two jobs never download the same file at once: a job whose final paths overlap a running job's
waits for that job to end first (``job.waiting_for`` names it), then runs; the files the first
job completed are then found at their final paths and cost no request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from ._fetch import FetchOptions, plan
from ._manager import DownloadManager
from ._models import DownloadInfo, DownloadStatus, FileConfig, PatchDownloadInfo, Results
from ._storage import Storage
from ._tracker import Tracker

if TYPE_CHECKING:
    from ._notebook import CellTracker

__all__ = ["DownloadJob", "start"]

logger = logging.getLogger("nbdl")


@dataclass(frozen=True)
class Prepared:
    """A validated batch: its planned manager, and where its files will go."""

    #: Validated, every item queued (and registered with its tracker), nothing requested yet.
    manager: DownloadManager
    #: The URL of each item, in input order (duplicates included, as in ``Results``).
    urls: tuple[str, ...]
    #: The first record of each URL (status QUEUED, final path).
    initial: dict[str, DownloadInfo]

    @property
    def tracker(self) -> Tracker:
        """The batch's display."""
        return self.manager.tracker

    @property
    def paths(self) -> frozenset[Path]:
        """The absolute final paths, as known before any request."""
        return frozenset(
            # An object's location stands for its path: it must not clash with a local file.
            Path(info.location) if info.location else info.path.absolute()
            for info in self.initial.values()
        )

    async def run(self) -> Results:
        """Run the planned batch (once)."""
        async with self.manager:
            return await self.manager.run()


def prepare(
    items: Iterable[str | FileConfig], dest: str | Path | Storage, options: Mapping[str, Any]
) -> Prepared:
    """Validate and plan a batch as ``fetch`` does, before anything is shown or requested."""
    manager = plan(items, dest, options)
    urls = manager.urls
    initial = {url: manager.info(url) for url in urls}
    return Prepared(manager, urls, initial)


def cell_tracker(tracker: Tracker) -> CellTracker | None:
    """``tracker`` if it is a notebook display, else None."""
    # A notebook tracker exists only if its module was loaded: never load it from here.
    module = sys.modules.get(f"{__package__}._notebook")
    return tracker if module is not None and isinstance(tracker, module.CellTracker) else None


def show_in_cell(prepared: Prepared, *, cancellable: bool = True) -> None:
    """Display a notebook tracker now, from the caller's cell (later tasks would miss it).

    The plan registered the batch with it already, so the bars are created here too: widgets
    created by a background task belong to no cell (nbclient, for one, drops them).
    """
    display = cell_tracker(prepared.tracker)
    if display is not None:
        display.cancellable = cancellable
        display.show()


#: Final path to the job that last claimed it, while that job runs.
_RUNNING: dict[Path, DownloadJob] = {}
#: Strong references: the loop keeps only weak ones to tasks.
_LIVE: set[DownloadJob] = set()


def running_jobs_for(paths: Iterable[Path]) -> list[DownloadJob]:
    """The running jobs that will write any of ``paths`` (absolute), oldest first."""
    found = {job for path in paths if (job := _RUNNING.get(path)) is not None and not job.done()}
    return sorted(found, key=lambda job: job.number)


class DownloadJob:
    """A batch running in the background; made by :func:`nbdl.start`.

    ``await job`` gives the ``Results`` (an interrupt of the awaiting cell stops the waiting, not
    the job).  ``job.cancel()`` stops it: partial files stay for resume, and ``await job`` then
    gives results whose unfinished files are ``cancelled``.
    """

    _numbers = itertools.count(1)

    def __init__(self, prepared: Prepared, loop: asyncio.AbstractEventLoop) -> None:
        self.number = next(self._numbers)
        self.tracker = prepared.tracker
        self._prepared = prepared
        self._cancel_requested = False
        #: Jobs this one waits for because they write some of the same files.
        self.waiting_for: list[DownloadJob] = running_jobs_for(prepared.paths)
        self._paths = prepared.paths
        display = cell_tracker(self.tracker)
        if display is not None:
            display.on_cancel(self.cancel)
        show_in_cell(prepared)
        self._task: asyncio.Task[Results] = loop.create_task(
            self._run(), name=f"nbdl-job-{self.number}"
        )
        for path in self._paths:
            _RUNNING[path] = self
        _LIVE.add(self)
        self._task.add_done_callback(self._finished)

    async def _run(self) -> Results:
        try:
            if self.waiting_for:
                # asyncio.wait never cancels what it waits for: cancelling this job leaves them.
                await asyncio.wait([job._task for job in self.waiting_for])
            return await self._prepared.run()
        except asyncio.CancelledError:
            if not self._cancel_requested:
                raise
            return self._cancelled_results()

    def _cancelled_results(self) -> Results:
        manager = self._prepared.manager
        cancelled = PatchDownloadInfo(status=DownloadStatus.CANCELLED, error="cancelled")
        infos = []
        for url in self._prepared.urls:
            info = manager.info(url)
            infos.append(info if info.is_terminal() else info.apply(cancelled))
        return Results(infos)

    def _finished(self, task: asyncio.Task[Results]) -> None:
        for path in self._paths:
            if _RUNNING.get(path) is self:
                del _RUNNING[path]
        _LIVE.discard(self)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("nbdl: download job %d failed: %r", self.number, exc)

    def cancel(self) -> bool:
        """Stop the job; False if it had already ended."""
        if self._task.done():
            return False
        self._cancel_requested = True
        return self._task.cancel()

    def done(self) -> bool:
        """True once the job has ended (completed, failed or cancelled)."""
        return self._task.done()

    @property
    def results(self) -> Results | None:
        """The ``Results`` once the job has ended, else None."""
        if not self._task.done():
            return None
        if self._task.cancelled():
            # Cancelled before its first step ran: nothing downloaded, all cancelled.
            return self._cancelled_results() if self._cancel_requested else None
        return None if self._task.exception() else self._task.result()

    def __await__(self) -> Generator[Any, None, Results]:
        return self._wait().__await__()

    async def _wait(self) -> Results:
        try:
            # The shield: cancelling the waiter (a cell interrupt) must not cancel the job.
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled() and self._cancel_requested:
                return self._cancelled_results()
            raise

    def __repr__(self) -> str:
        if not self._task.done():
            state = "waiting" if any(not j.done() for j in self.waiting_for) else "running"
        else:
            results = self.results
            state = "ended" if results is None else results._summary()
        return f"<DownloadJob #{self.number} {len(self._prepared.urls)} files: {state}>"


def start(
    items: Iterable[str | FileConfig],
    dest: str | Path | Storage = ".",
    **options: Unpack[FetchOptions],
) -> DownloadJob:
    """Start downloading in the background and return a :class:`DownloadJob` at once.

    Takes the same arguments as ``nbdl.fetch`` and validates them the same way, right here.  In
    a notebook the tracker is displayed in the calling cell and keeps updating while other cells
    run.  Needs a running event loop (any notebook cell has one); in a script use
    ``nbdl.fetch_sync``.  A job whose files overlap a running job's waits for it first.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "nbdl.start needs a running event loop (a notebook cell, or async code); "
            "in a plain script use nbdl.fetch_sync(...)"
        ) from None
    return DownloadJob(prepare(items, dest, options), loop)
