"""``nbdl.fetch_sync``: ``fetch`` for code that cannot ``await``.

In a plain script there is no running loop: ``asyncio.run``, with every signal handler it may
touch restored afterwards.  Inside a running loop (a notebook cell, where ``asyncio.run`` raises)
the batch runs on a private loop in a worker thread while the cell's thread waits.  That needs no
patching of asyncio: plain ``nest_asyncio`` 1.6 makes ipykernel 7 silently drop the cells queued
behind in "Run All", and the thread avoids the question altogether.  The notebook display is
shown from the cell's own thread first, so it lands in the right cell; the worker only changes
widget properties, which ipykernel >= 7.1 sends from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Unpack

from ._fetch import FetchOptions
from ._jobs import Prepared, prepare, running_jobs_for, show_in_cell
from ._models import FileConfig, Results
from ._storage import Storage

__all__ = ["fetch_sync"]

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name)
)


def fetch_sync(
    items: Iterable[str | FileConfig],
    dest: str | Path | Storage = ".",
    **options: Unpack[FetchOptions],
) -> Results:
    """Download like ``nbdl.fetch`` and block until done; for scripts and non-async code.

    Takes the same arguments as ``fetch``.  Works with no event loop and inside a running one
    (a notebook cell).  Ctrl+C or a kernel interrupt cancels the downloads (partial files stay
    for resume) and raises ``KeyboardInterrupt``.  Refuses (``RuntimeError``) to write files a
    running ``nbdl.start`` job is writing: ``await`` that job first.
    """
    prepared = prepare(items, dest, options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with _signal_handlers_restored():
            return asyncio.run(prepared.run())
    busy = running_jobs_for(prepared.paths)
    if busy:
        raise RuntimeError(
            f"{busy[0]!r} is downloading some of these files; 'await' it before fetch_sync"
        )
    # The kernel's thread waits in this call, so it could not handle a Cancel click: the
    # display shows none, and a kernel interrupt is the way to stop.
    show_in_cell(prepared, cancellable=False)
    return _run_in_thread(prepared)


@contextlib.contextmanager
def _signal_handlers_restored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can have (or change) signal handlers
        return
    saved = [(sig, signal.getsignal(sig)) for sig in _SIGNALS]
    try:
        yield
    finally:
        for sig, handler in saved:
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)


class _Outcome:
    """What the worker thread hands back: its loop and task (to cancel), then a result."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.finished = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.results: Results | None = None
        self.error: BaseException | None = None


def _run_in_thread(prepared: Prepared) -> Results:
    outcome = _Outcome()

    async def main() -> Results:
        outcome.loop = asyncio.get_running_loop()
        outcome.task = asyncio.current_task()
        outcome.started.set()
        return await prepared.run()

    def work() -> None:
        try:
            outcome.results = asyncio.run(main())
        except BaseException as exc:  # handed to the waiting thread, which re-raises it
            outcome.error = exc
        finally:
            outcome.started.set()
            outcome.finished.set()

    thread = threading.Thread(target=work, name="nbdl-fetch-sync", daemon=True)
    thread.start()
    try:
        # Short waits keep the thread interruptible: a kernel interrupt arrives as SIGINT.
        while not outcome.finished.wait(0.1):
            pass
    except BaseException:
        outcome.started.wait()
        if outcome.loop is not None and outcome.task is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to stop
                outcome.loop.call_soon_threadsafe(outcome.task.cancel)
        thread.join()
        raise
    thread.join()
    if outcome.error is not None:
        raise outcome.error
    assert outcome.results is not None
    return outcome.results
