"""Lifecycle hooks: plain or async callables told when a file is queued, started, retried, ended.

::

    hooks = nbdl.Hooks().on("completed", index_file).on("failed", alert)
    await nbdl.fetch(urls, "data", hooks=hooks)      # or hooks={"completed": [index_file]}

Hooks run off the download path: every callable has a queue and a task of its own, so it sees
its events one at a time and in order (for one file: queued < started < retrying... <
processed < completed, or failed, or cancelled), while downloads go on.  An async hook is
awaited on the batch's loop; a plain one runs in a worker thread.  A hook that raises is
logged (``logging.getLogger("nbdl")``) and counted, never raised.  When the batch ends it waits
up to ``Hooks(wait=...)`` seconds for the hooks to catch up, then cancels what is left (a
plain hook already running in its thread finishes there) and logs how many calls were dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from ._errors import InvalidConfigError
from ._models import DownloadInfo, DownloadStatus, PatchDownloadInfo

logger = logging.getLogger("nbdl")

#: Seconds the end of a batch waits for hooks that are behind, by default.
DEFAULT_WAIT = 5.0


class EventKind(StrEnum):
    """What happened to a file."""

    #: Registered for the batch, before any request.
    QUEUED = "queued"
    #: A worker took it (the first attempt begins; a file found complete starts too).
    STARTED = "started"
    #: Another attempt begins after a failure (``info.attempts`` is its number).
    RETRYING = "retrying"
    #: The processors (extraction, ...) ran on the verified file; ``info.output`` is theirs.
    PROCESSED = "processed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class DownloadEvent:
    """One event of one file: what happened, the file's record at that moment, and when."""

    kind: EventKind
    info: DownloadInfo
    #: ``time.time()`` when it happened (a hook may run later).
    time: float


Hook: TypeAlias = Callable[[DownloadEvent], object] | Callable[[DownloadEvent], Awaitable[object]]

_TERMINAL = {
    DownloadStatus.COMPLETED: EventKind.COMPLETED,
    DownloadStatus.FAILED: EventKind.FAILED,
    DownloadStatus.CANCELLED: EventKind.CANCELLED,
}


class Hooks:
    """Callables subscribed to events; give it to ``fetch(..., hooks=...)``.

    ``on`` returns the same object, so subscriptions chain.  One ``Hooks`` may serve several
    batches, one after the other or at once: each batch dispatches on its own.
    """

    def __init__(self, *, wait: float = DEFAULT_WAIT) -> None:
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait >= 0:
            raise InvalidConfigError(f"wait must be a number of seconds >= 0, got {wait!r}")
        self.wait = float(wait)
        self._subscribers: dict[EventKind, list[Hook]] = {}
        #: Hook calls that raised, and calls dropped at a batch's end, over every batch.
        self.errors = 0
        self.dropped = 0

    def on(self, kind: EventKind | str, hook: Hook) -> Hooks:
        """Call ``hook(event)`` for every event of ``kind``; returns ``self``."""
        try:
            chosen = EventKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in EventKind)
            raise InvalidConfigError(f"unknown hook event {kind!r}; use one of {known}") from None
        if not callable(hook):
            raise InvalidConfigError(f"a hook must be callable, got {hook!r}")
        self._subscribers.setdefault(chosen, []).append(hook)
        return self

    @classmethod
    def of(cls, hooks: object) -> Hooks | None:
        """``hooks`` as given to ``fetch``: a ``Hooks``, a mapping of events to callables, None."""
        if hooks is None or isinstance(hooks, Hooks):
            return hooks
        if not isinstance(hooks, Mapping):
            raise InvalidConfigError(
                f"hooks must be an nbdl.Hooks or a mapping of event name to callables, "
                f"got {hooks!r}"
            )
        made = cls()
        for kind, value in hooks.items():
            callables: Iterable[object] = (
                value if isinstance(value, list | tuple | set | frozenset) else [value]
            )
            for hook in callables:
                if not callable(hook):
                    raise InvalidConfigError(f"hook for {kind!r} must be callable, got {hook!r}")
                made.on(kind, hook)
        return made

    def subscribed(self) -> bool:
        """True when any hook is subscribed."""
        return any(self._subscribers.values())

    def __repr__(self) -> str:
        counts = ", ".join(f"{k.value}: {len(v)}" for k, v in self._subscribers.items() if v)
        return f"Hooks({counts})"


class Dispatcher:
    """One batch's delivery of events: a queue and a task per subscribed callable."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self._loop = asyncio.get_running_loop()
        callables = {id(h): h for hs in hooks._subscribers.values() for h in hs}
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, len(callables)), thread_name_prefix="nbdl-hook"
        )
        self._queues: dict[int, asyncio.Queue[DownloadEvent | None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        for key, hook in callables.items():
            queue: asyncio.Queue[DownloadEvent | None] = asyncio.Queue()
            self._queues[key] = queue
            self._tasks.append(
                self._loop.create_task(self._deliver(hook, queue), name=f"nbdl-hook-{key}")
            )
        self._targets = {
            kind: [self._queues[id(h)] for h in hs] for kind, hs in hooks._subscribers.items()
        }
        #: Files seen in the PROCESSING phase (they get a PROCESSED event before COMPLETED).
        self._processing: set[str] = set()

    def emit(self, kind: EventKind, info: DownloadInfo) -> None:
        """Queue ``kind`` for every hook subscribed to it; never blocks."""
        targets = self._targets.get(kind)
        if not targets:
            return
        event = DownloadEvent(kind, info, time.time())
        for queue in targets:
            queue.put_nowait(event)

    def saw(self, patch: PatchDownloadInfo, info: DownloadInfo) -> None:
        """Turn one report of the worker (already applied: ``info``) into events."""
        status = patch.status
        if patch.started_at is not None:
            self.emit(EventKind.STARTED, info)
        elif patch.attempts is not None and patch.attempts > 1 and status is None:
            self.emit(EventKind.RETRYING, info)
        if status is None:
            return
        if status is DownloadStatus.PROCESSING:
            self._processing.add(info.url)
            return
        kind = _TERMINAL.get(status)
        if kind is None:
            return
        if info.url in self._processing:
            self._processing.discard(info.url)
            if kind is EventKind.COMPLETED:
                self.emit(EventKind.PROCESSED, info)
        self.emit(kind, info)

    async def _deliver(self, hook: Hook, queue: asyncio.Queue[DownloadEvent | None]) -> None:
        is_async = inspect.iscoroutinefunction(hook)
        while (event := await queue.get()) is not None:
            try:
                if is_async:
                    result = hook(event)
                else:
                    result = await self._loop.run_in_executor(self._executor, hook, event)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                self.hooks.errors += 1
                logger.exception(
                    "nbdl: hook %r failed on %s of %s",
                    hook,
                    event.kind.value,
                    event.info.filename,
                )

    async def close(self, *, wait: float | None = None) -> None:
        """Let the hooks catch up for up to ``wait`` seconds, then drop what is left."""
        for queue in self._queues.values():
            queue.put_nowait(None)
        limit = self.hooks.wait if wait is None else wait
        late: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=limit)
        dropped = sum(queue.qsize() - 1 for queue in self._queues.values() if queue.qsize())
        dropped += len(late)  # each late task is in the middle of one call
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(BaseException):
                await task
        # A plain hook still running in its thread finishes there; nobody waits for it.
        self._executor.shutdown(wait=False, cancel_futures=True)
        if dropped:
            self.hooks.dropped += dropped
            logger.warning(
                "nbdl: hooks were %d call(s) behind when the batch ended; waited %.1f s, "
                "dropped them",
                dropped,
                limit,
            )
