"""Object-store destination vs local disk: one big file and 2000 small files, time and peak RSS.

    .venv/bin/python benchmarks/storage.py [--big-mib 256] [--small 2000] [--rounds 3]

Needs the test extra (obstore, moto[server]).  The S3 API is moto's server in a process of its
own on 127.0.0.1 (it keeps objects in memory, so its speed is a floor, not what AWS gives); the
files come from an aiohttp static file server in this process (files in a scratch folder).
Every measured run is a fresh process; its batch time (``fetch`` alone) and its peak RSS
(VmHWM, start-up included) are reported, medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

MiB = 1024 * 1024

CHILD = r"""
import asyncio, json, sys, time
import nbdl
urls, dest = json.loads(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
results = asyncio.run(nbdl.fetch(urls, dest, tracker="none", max_workers=16))
took = time.perf_counter() - started
assert results.ok, results
with open("/proc/self/status") as status:
    peak = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) * 1024
print(json.dumps({"seconds": took, "peak": peak}))
"""


@contextmanager
def file_server(folder: str) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 from a thread of its own; yields the base URL."""
    loop = asyncio.new_event_loop()
    port = free_port()
    app = web.Application()
    app.router.add_static("/", folder)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def make_files(folder: str, big_mib: int, small: int) -> None:
    os.makedirs(os.path.join(folder, "small"))
    with open(os.path.join(folder, "big.bin"), "wb") as out:
        for _ in range(big_mib):
            out.write(os.urandom(MiB))
    for i in range(small):
        with open(os.path.join(folder, "small", f"s{i:05d}.bin"), "wb") as out:
            out.write(os.urandom(10 * 1024))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


def run(urls: list[str], dest: str, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(urls), dest],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    lines = out.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        raise SystemExit(f"run into {dest} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    if out.returncode:
        # Seen once in ~10 S3 runs of 1 GiB: SIGABRT at interpreter exit, after the batch
        # completed and reported (obstore's runtime threads at shutdown?).  Counted, not hidden.
        print(f"note: exit status {out.returncode} after a completed run into {dest}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import boto3

    moto, endpoint = start_moto()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    scratch = tempfile.mkdtemp(prefix="nbdl-storage-bench-")
    rows: dict[str, list[dict[str, float]]] = {}
    try:
        files = os.path.join(scratch, "served")
        make_files(files, args.big_mib, args.small)
        with file_server(files) as base:
            workloads = {
                f"{args.big_mib} MiB file": [f"{base}/big.bin"],
                f"{args.small} x 10 KiB": [f"{base}/small/s{i:05d}.bin" for i in range(args.small)],
            }
            for round_ in range(args.rounds):
                for name, urls in workloads.items():
                    for target in ("local disk", "S3 (moto)"):
                        if target == "local disk":
                            dest = os.path.join(scratch, f"r{round_}-{uuid.uuid4().hex[:6]}")
                        else:
                            bucket = f"bench-{uuid.uuid4().hex[:12]}"
                            s3.create_bucket(Bucket=bucket)
                            dest = f"s3://{bucket}/run"
                        rows.setdefault(f"{name} -> {target}", []).append(run(urls, dest, env))
                        if target == "local disk":
                            shutil.rmtree(dest, ignore_errors=True)
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"| workload | median time | median peak RSS | ({args.rounds} rounds) |")
    print("| --- | --- | --- | --- |")
    for name, results in rows.items():
        seconds = statistics.median(r["seconds"] for r in results)
        peak = statistics.median(r["peak"] for r in results) / MiB
        print(f"| {name} | {seconds:.2f} s | {peak:.0f} MiB | |")


if __name__ == "__main__":
    main()
