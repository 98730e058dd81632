"""Driver for the benchmark suite: one ``nbdl.fetch`` batch in a fresh process.

    python benchmarks/run_nbdl.py --dest DIR [--workers N] [--segments N] [--per-host N]
                                  [--retries N] [--tracker none|rich|notebook] [--list FILE]
                                  [URL ...]

Options not given are not passed: nbdl's own defaults are what is measured.  Over HTTPS it
trusts what aiohttp's default SSL context trusts (``SSL_CERT_FILE`` points it at a private CA).

It uses the Python API (not the CLI), prints one JSON line (in-process seconds and user CPU
seconds of ``fetch``, files) and exits 1 if any download failed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import io
import json
import os
import sys
import time
from typing import Any

import nbdl


def make_tracker(name: str) -> Any:
    """The tracker object for ``--tracker``; rich draws into a forced terminal, not a pipe."""
    if name == "none":
        return "none"
    if name == "rich":
        cls = getattr(nbdl, "RichTracker", None)
        if cls is None:
            raise SystemExit("not available: nbdl.RichTracker")
        from rich.console import Console

        console = Console(file=io.StringIO(), force_terminal=True, width=100)
        try:
            return cls(console=console)
        except TypeError:
            return cls()
    if name == "notebook":
        cls = getattr(nbdl, "NotebookTracker", None)
        if cls is None:
            raise SystemExit("not available: nbdl.NotebookTracker")
        return cls()
    raise SystemExit(f"unknown tracker {name!r}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dest", required=True)
    # Not given: nbdl's default (a single-file row must measure what a user's fetch([url]) gets,
    # and the default per-host cap follows max_workers).
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--segments", type=int, default=None)
    parser.add_argument("--per-host", type=int, default=None)
    parser.add_argument("--retries", type=int, default=None)
    parser.add_argument("--tracker", default="none")
    parser.add_argument("--list", default=None, help="a file with one URL per line")
    parser.add_argument("urls", nargs="*")
    args = parser.parse_args()

    items: list[str] = list(args.urls)
    if args.list:
        with open(args.list, encoding="utf-8") as fh:
            items.extend(line.strip() for line in fh if line.strip())

    params = inspect.signature(nbdl.fetch).parameters
    kwargs: dict[str, Any] = {}
    options = (
        ("max_workers", args.workers),
        ("segments", args.segments),
        ("max_per_host", args.per_host),
        ("retries", args.retries),
    )
    for option, value in options:
        if value is None:
            continue
        if option in params:
            kwargs[option] = value
        else:
            print(f"run_nbdl: this nbdl has no {option}=; ignored", file=sys.stderr)

    tracker = make_tracker(args.tracker)
    # The imports above leave the collector a debt that the next code would pay: settle it
    # before the clock starts, so a full collection is not billed to whichever run hits it.
    gc.collect()
    cpu = os.times()
    started = time.perf_counter()
    results = asyncio.run(nbdl.fetch(items, args.dest, tracker=tracker, **kwargs))
    elapsed = time.perf_counter() - started
    user = os.times().user - cpu.user
    failed = results.failed
    for info in failed[:5]:
        print(f"run_nbdl: FAILED {info.url}: {info.error}", file=sys.stderr)
    print(
        json.dumps({"elapsed": elapsed, "user": user, "files": len(results), "failed": len(failed)})
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
