"""The trackers' own work, replayed: what a display adds to a batch, without the batch's noise.

    python benchmarks/replay_trackers.py --list FILE --dest DIR [--rounds 15]

Runs one ``nbdl.fetch`` of the listed URLs with a recording tracker, then feeds the recorded
registrations and reports to fresh trackers, ``--rounds`` times each, with a refresh after
every third of them (a batch of ~0.5 s sees two or three at 4 per second) and ``close`` at the
end.  Prints one JSON line: median milliseconds per replay for the plain ``DownloadTracker``
(the record keeping the manager does anyway: it keeps its records in a ``DownloadTracker``
tracker, or in one of its own) and for the Rich and notebook trackers, and the number of
events.  A tracker's own cost is its time minus the plain one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import shutil
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import driver_options
from rich.console import Console

import nbdl

Event = tuple[str, Any, Any]


class Recorder(nbdl.DownloadTracker):
    """Keeps every registration and report, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def register_download(self, info: nbdl.DownloadInfo) -> None:
        super().register_download(info)
        self.events.append(("register", info, None))

    def patch_download(self, url: str, patch: nbdl.PatchDownloadInfo) -> None:
        super().patch_download(url, patch)
        self.events.append(("patch", url, patch))


def replay(tracker: Any, events: list[Event]) -> float:
    """Seconds to feed ``events`` to ``tracker``, start to close."""
    third = max(1, len(events) // 3)
    started = time.perf_counter()
    tracker.start()
    for n, (kind, first, second) in enumerate(events, 1):
        if kind == "register":
            tracker.register_download(first)
        else:
            tracker.patch_download(first, second)
        if n % third == 0 and hasattr(tracker, "refresh"):
            tracker.refresh()
    tracker.close()
    return time.perf_counter() - started


def main() -> None:
    urls, dest, rounds = driver_options(__doc__, rounds=15)
    recorder = Recorder()
    results = asyncio.run(nbdl.fetch(urls, dest, max_workers=16, tracker=recorder))
    shutil.rmtree(dest, ignore_errors=True)
    if results.failed:
        raise SystemExit(f"replay_trackers: {len(results.failed)} downloads failed")
    makers: dict[str, Callable[[], Any]] = {
        "plain": nbdl.DownloadTracker,
        "rich": lambda: nbdl.RichTracker(
            console=Console(file=io.StringIO(), force_terminal=True, width=100)
        ),
        "notebook": nbdl.NotebookTracker,
    }
    times: dict[str, list[float]] = {name: [] for name in makers}
    # Outside a kernel the notebook display prints its widgets' text form: not its cost in one.
    with contextlib.redirect_stdout(io.StringIO()):
        for _ in range(rounds):
            for name, make in makers.items():
                tracker = make()
                gc.collect()
                times[name].append(replay(tracker, recorder.events))
    medians = {f"{name}_ms": statistics.median(values) * 1000 for name, values in times.items()}
    print(json.dumps({**medians, "events": len(recorder.events)}))


if __name__ == "__main__":
    main()
