"""Load on the web service: a big queue, downloads running, many API clients and event streams.

    .venv/bin/python benchmarks/service_load.py [--items 10000] [--jobs 16] [--clients 100]

Starts ``nbdl serve`` as a process of its own (so the load generator does not share its CPU),
a LocalServer in this process whose files trickle (so ``--jobs`` downloads keep running), queues
``--items`` downloads in one batch, then runs ``--clients`` clients for ``--seconds``: each keeps
the event stream open and, about twice a second (randomised), asks for a page of items, one item
or the totals.  Prints p50/p99/max latency per kind of request, errors, and events received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp


def start_service(folder: Path, token: str, jobs: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "nbdl", "serve", "--port", "0", "-o", str(folder), "-j", str(jobs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NBDL_TOKEN": token},
    )
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=", line)
        if found:
            return process, found[1]
    raise SystemExit("nbdl serve printed no URL")


_FILES = """
import sys
from nbdl.testing import LocalServer
with LocalServer() as server:
    print(server.base, flush=True)
    sys.stdin.read()
"""


def start_files() -> tuple[subprocess.Popen[str], str]:
    """LocalServer in a process of its own: in this one it would share the clients' CPU."""
    process = subprocess.Popen(
        [sys.executable, "-c", _FILES], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def client(
    base: str,
    token: str,
    items: int,
    until: float,
    latencies: dict[str, list[float]],
    errors: list[str],
    events: list[int],
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base, headers=headers) as session:

        async def listen() -> None:
            async with session.get("/api/v1/events") as resp:
                if resp.status != 200:
                    errors.append(f"events: HTTP {resp.status}")
                    return
                # Counted in large reads: parsing line by line here cost more CPU than the
                # service spent sending, and the load generator's delays count as latency.
                async for chunk in resp.content.iter_any():
                    events[0] += chunk.count(b"\nid: ") + chunk.startswith(b"id: ")

        stream = asyncio.create_task(listen())
        rng = random.Random()
        try:
            while time.monotonic() < until:
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                kind = rng.choice(("page", "item", "stats"))
                if kind == "page":
                    path = f"/api/v1/downloads?limit=50&cursor={rng.randrange(items)}"
                elif kind == "item":
                    path = f"/api/v1/downloads/{rng.randrange(1, items + 1)}"
                else:
                    path = "/api/v1/stats"
                started = time.perf_counter()
                try:
                    async with session.get(path) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors.append(f"{kind}: HTTP {resp.status}")
                            continue
                except aiohttp.ClientError as exc:
                    errors.append(f"{kind}: {exc!r}")
                    continue
                latencies[kind].append(time.perf_counter() - started)
        finally:
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--url", help="use this running service (started with $NBDL_TOKEN) instead of one of ours"
    )
    args = parser.parse_args()
    files, files_base = start_files()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.url:
                asyncio.run(load(args, args.url, os.environ["NBDL_TOKEN"], files_base))
                return
            token = "bench-token-0123456789"
            process, base = start_service(Path(tmp) / "dl", token, args.jobs)
            try:
                asyncio.run(load(args, base, token, files_base))
            finally:
                process.terminate()
                process.wait(30)
    finally:
        files.communicate("")


async def load(args: argparse.Namespace, base: str, token: str, files_base: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base, headers=headers) as session:
        # Files that trickle at 100 kB/s: the running downloads stay running.
        batch = [
            {"url": f"{files_base}/data/f{i}.bin?size=5000000&rate=100000"}
            for i in range(args.items)
        ]
        started = time.perf_counter()
        async with session.post("/api/v1/downloads/batch", json={"items": batch}) as r:
            assert r.status == 201, await r.text()
        added = time.perf_counter() - started
        await asyncio.sleep(2)
        async with session.get("/api/v1/stats") as r:
            stats = await r.json()
    latencies: dict[str, list[float]] = {"page": [], "item": [], "stats": []}
    errors: list[str] = []
    events = [0]
    until = time.monotonic() + args.seconds
    await asyncio.gather(
        *(
            client(base, token, args.items, until, latencies, errors, events)
            for _ in range(args.clients)
        )
    )
    every = [x for values in latencies.values() for x in values]
    figures = {
        "items": args.items,
        "running": stats["running"],
        "clients": args.clients,
        "seconds": args.seconds,
        "batch_add_s": round(added, 2),
        "requests": len(every),
        "errors": len(errors),
        "events_received": events[0],
        **{
            f"{kind}_{name}_ms": round(1000 * fn(values), 1)
            for kind, values in {**latencies, "all": every}.items()
            for name, fn in (
                ("p50", statistics.median),
                ("p99", lambda v: percentile(v, 0.99)),
                ("max", max),
            )
            if values
        },
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{args.items} queued, {stats['running']} running, {args.clients} clients for "
        f"{args.seconds:g} s (batch of {args.items} added in {added:.2f} s)"
    )
    print(f"{'request':<8} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind, values in {**latencies, "all": every}.items():
        if values:
            print(
                f"{kind:<8} {len(values):>7} {1000 * statistics.median(values):>8.1f} "
                f"{1000 * percentile(values, 0.99):>8.1f} {1000 * max(values):>8.1f}"
            )
    print(f"errors: {len(errors)} {sorted(set(errors))[:5]}; events received: {events[0]}")


if __name__ == "__main__":
    main()
