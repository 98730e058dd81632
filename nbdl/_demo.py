"""``nbdl demo``: download a mix of files from an embedded local server, no network needed.

The mix shows what the display does: three large files, many small ones, a slow one, a flaky one
that answers 503 with ``Retry-After: 1`` and succeeds on the retry, and one that is missing (404)
and fails on purpose.  The demo exits 0 when the results are exactly these, so ``make demo``
passes while showing a failure.  It takes about 10 seconds.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from pathlib import Path

from ._models import DownloadStatus, FileConfig, Results
from .testing import LocalServer

__all__ = ["demo_items", "run_demo"]

MiB = 1024 * 1024
#: The file that fails on purpose.
MISSING = "missing.bin"
#: The file whose first answer is a 503.
FLAKY = "flaky.parquet"


def demo_items(server: LocalServer) -> list[FileConfig]:
    """The files the demo downloads from ``server``."""
    # Rates are set so each large file takes a few seconds: long enough to watch.
    items = [
        FileConfig(server.url(f"/data/large-{n}.bin", size=40 * MiB, rate=10 * MiB), priority=5)
        for n in (1, 2, 3)
    ]
    items.append(FileConfig(server.url("/data/slow.csv", size=MiB, rate=160 * 1024), priority=4))
    items.append(
        FileConfig(
            server.url(f"/data/{FLAKY}", size=6 * MiB, fail=503, retry_after=1, rate=4 * MiB),
            priority=3,
        )
    )
    sizes = random.Random(7)  # the same mix every run
    for n in range(60):
        size = sizes.randrange(20_000, 400_000)
        items.append(FileConfig(server.url(f"/data/small-{n:02d}.json", size=size, rate=MiB)))
        if n == 20:
            items.append(FileConfig(server.url(f"/data/{MISSING}", fail=404)))
    return items


def expected(results: Results) -> bool:
    """True when only the missing file failed and everything else completed."""
    for info in results:
        if info.filename == MISSING:
            if info.status is not DownloadStatus.FAILED or info.http_status != 404:
                return False
        elif info.status is not DownloadStatus.COMPLETED:
            return False
    return True


def run_demo(*, output: str | None = None, jobs: int = 6) -> int:
    """Run the demo; returns the exit status (0 when the results are the expected ones)."""
    from ._cli import terminal_display
    from ._fetch import fetch

    with tempfile.TemporaryDirectory(prefix="nbdl-demo-") as scratch, LocalServer() as server:
        dest = Path(output) if output is not None else Path(scratch)
        items = demo_items(server)
        print(
            f"nbdl demo: {len(items)} files from a local server at {server.base} into {dest}\n"
            f"(one of them, {MISSING}, is missing on purpose; {FLAKY} succeeds on a retry)",
            flush=True,
        )
        results = asyncio.run(
            fetch(
                items,
                dest=dest,
                max_workers=jobs,
                tracker=terminal_display(sys.stdout),
                # Always download, so a second run into the same folder shows the same thing.
                overwrite=True,
            )
        )
        if not expected(results):
            print("nbdl demo: unexpected results:", file=sys.stderr)
            print(repr(results), file=sys.stderr)
            return 1
        where = f"kept in {dest}" if output is not None else "removed (use -o DIR to keep them)"
        print(f"nbdl demo: as expected, {MISSING} failed and the rest completed; files {where}")
        return 0
