"""The trackers' cost in one warm process: batches with and without a display, side by side.

    python benchmarks/tracker_pairs.py --list FILE --dest DIR [--rounds 60]

One process fetches the listed URLs once with each tracker (warm-up: imports, first frames,
caches), then ``--rounds`` times more with each, in a carry-over-balanced order of ``none``,
``rich`` and ``notebook`` (every tracker runs in every place and right after every other one
equally often), each batch into a fresh folder under ``DIR`` that is deleted after it, outside
the clock.  A tracker is made afresh for every batch (before the clock, like the bench's
driver), so what a display does per batch (its widgets, its first and last frames) counts.

Why one process: whole batches of 2000 small files vary by 10-20 % from one run to the next
on this VM, in CPU time as much as in wall time (the host, not the scheduler), and a tracker
costs a few percent; 24 fresh-process pairs put the median anywhere from -2 % to +11 % for the
same engine.  Sixty warm pairs, a second apart, settle it to about a percent.  Prints one JSON
line: the in-process seconds and user CPU seconds of every batch, by tracker, in round order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench import balanced_orders, driver_options
from run_nbdl import make_tracker

import nbdl

NAMES = ("none", "rich", "notebook")


def batch(urls: list[str], dest: Path, name: str) -> tuple[float, float]:
    """One batch with a fresh ``name`` tracker: (seconds, user CPU seconds) of ``fetch``."""
    tracker: Any = make_tracker(name)
    gc.collect()
    cpu = os.times().user
    started = time.perf_counter()
    results = asyncio.run(nbdl.fetch(urls, dest, max_workers=16, tracker=tracker))
    elapsed = time.perf_counter() - started
    user = os.times().user - cpu
    shutil.rmtree(dest, ignore_errors=True)
    if results.failed:
        raise SystemExit(f"tracker_pairs: {len(results.failed)} downloads failed ({name})")
    return elapsed, user


def main() -> None:
    urls, dest, rounds = driver_options(__doc__, rounds=60)
    seconds: dict[str, list[float]] = {name: [] for name in NAMES}
    user: dict[str, list[float]] = {name: [] for name in NAMES}
    orders = balanced_orders(len(NAMES))
    # Outside a kernel the notebook display prints its widgets' text form: not its cost in one.
    with contextlib.redirect_stdout(io.StringIO()):
        for name in NAMES:
            batch(urls, dest / f"warm-{name}", name)
        for number in range(rounds):
            for index in orders[number % len(orders)]:
                name = NAMES[index]
                elapsed, cpu = batch(urls, dest / f"{name}-{number}", name)
                seconds[name].append(elapsed)
                user[name].append(cpu)
    print(json.dumps({"rounds": rounds, "seconds": seconds, "user": user}))


if __name__ == "__main__":
    main()
