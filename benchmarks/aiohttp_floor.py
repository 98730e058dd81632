"""The floor under any aiohttp client: the small-files batch with aiohttp alone, no nbdl.

    python benchmarks/aiohttp_floor.py --list FILE --dest DIR [--rounds 5]

16 tasks share one ``aiohttp.ClientSession`` (at most 16 connections) and take the listed URLs in
turn: ``GET``, read the whole body, write it with ``os.open``/``os.write``/``os.close`` to a new
file in a fresh folder under ``DIR``.  No checks, no temporary names, no records, no retries:
what nbdl does on top of that is its own cost, and what this takes no client built on aiohttp
(the library the user chose) can go below.  The first round runs in a fresh process, like the
bench's nbdl rows; the later rounds reuse the warm session.  Prints one JSON line: every round's
seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import aiohttp
from bench import driver_options

WORKERS = 16


async def rounds(urls: list[str], dest: Path, count: int) -> list[float]:
    """Seconds of each round (the session is made before the first clock starts)."""
    seconds = []
    connector = aiohttp.TCPConnector(limit=WORKERS)
    async with aiohttp.ClientSession(connector=connector) as session:
        for number in range(count):
            folder = dest / f"round-{number}"
            folder.mkdir(parents=True)
            todo = list(enumerate(urls))
            todo.reverse()

            async def worker(folder: Path = folder, todo: list[tuple[int, str]] = todo) -> None:
                while todo:
                    index, url = todo.pop()
                    async with session.get(url) as response:
                        response.raise_for_status()
                        body = await response.read()
                    fd = os.open(folder / f"f{index}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    try:
                        os.write(fd, body)
                    finally:
                        os.close(fd)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(WORKERS)))
            seconds.append(time.perf_counter() - started)
            shutil.rmtree(folder)
    return seconds


def main() -> None:
    urls, dest, count = driver_options(__doc__, rounds=5)
    print(json.dumps({"seconds": asyncio.run(rounds(urls, dest, count))}))


if __name__ == "__main__":
    main()
