"""nbdl on a Dask cluster vs one process: many small files from a local nginx.

    python benchmarks/distributed.py [--count 100000] [--workers 1,2] [--dest-root /dev/shm]

Each configuration runs as its own processes: ``nbdl.fetch`` in one process (the baseline,
through ``run_nbdl.py``), then ``nbdl.distributed.fetch`` with a client process and a scheduler
plus K worker processes of one thread each (``dask scheduler`` / ``dask worker --nworkers K``).
It prints files/s (the client's wall time of the call, cluster start-up excluded), the client's
peak RSS and each worker's peak RSS. nginx serves one 10 KiB file under every ``/small/<name>``
(see ``bench.py``); without nginx the slower ``nbdl.testing.LocalServer`` stands in (said in
the output). Files go to a fresh folder under ``--dest-root`` (tmpfs by default, so the figures
are nbdl's and Dask's costs, not ext4's file creation), removed after each run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file's name shadows the distributed package when its folder leads sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
PY = sys.executable
TIME = "/usr/bin/time"
SMALL = 10 * 1024
#: Files at once per worker process (and in the one-process baseline).
PER_WORKER = 16


# -- the client process (``--client ADDRESS``) --------------------------------------------------
async def client_main(address: str, listing: str, dest: str, shard_size: int, keep: str) -> None:
    from distributed import Client

    import nbdl.distributed

    async with Client(address, asynchronous=True) as client:
        workers = len(await client.nthreads())
        started = time.perf_counter()
        results = await nbdl.distributed.fetch(
            Path(listing),
            dest,
            client=client,
            shard_size=shard_size,
            tracker="none",
            keep=keep,  # type: ignore[arg-type]  (checked by fetch)
            max_workers=PER_WORKER,
            # One local host here: a cluster-wide cap that leaves each worker its 16.
            max_per_host=PER_WORKER * workers,
        )
        elapsed = time.perf_counter() - started
        worker_rss = await client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "files": results.total,
                "failed": results.failed_count,
                "shards": len(results.shards),
                "worker_rss_mb": sorted(kb / 1024 for kb in worker_rss.values()),
            }
        )
    )


# -- the suite ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def file_server(root: Path) -> Iterator[tuple[str, str]]:
    """Yields (base URL of /small/<name> files, what serves them)."""
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        spec = importlib.util.spec_from_file_location("bench", HERE / "bench.py")
        assert spec is not None
        assert spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = bench  # its dataclasses look their module up there
        spec.loader.exec_module(bench)

        with bench.nginx(root) as (base, _throttled):
            (root / "www" / "small.bin").write_bytes(os.urandom(SMALL))
            yield f"{base}/small", "nginx"
        return
    from nbdl.testing import LocalServer

    with LocalServer() as server:
        yield f"{server.base}/data", "nbdl.testing.LocalServer (no nginx: slower than nginx)"


@contextlib.contextmanager
def cluster(workers: int, scratch: Path) -> Iterator[str]:
    address = f"tcp://127.0.0.1:{free_port()}"
    log = (scratch / f"cluster-{workers}.log").open("wb")
    common = ["--host", "127.0.0.1", "--no-dashboard"]
    port = address.rsplit(":", 1)[1]
    procs = [
        subprocess.Popen(
            [PY, "-m", "distributed.cli.dask_scheduler", *common, "--port", port],
            stdout=log,
            stderr=log,
        )
    ]
    worker = [PY, "-m", "distributed.cli.dask_worker", address, *common, "--nthreads", "1"]
    worker += ["--nworkers", str(workers), "--local-directory", str(scratch)]
    procs.append(subprocess.Popen(worker, stdout=log, stderr=log))
    try:
        wait_for_workers(address, workers)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(count, timeout=120)


def timed(cmd: list[str]) -> tuple[dict[str, object], float]:
    """Run ``cmd`` under /usr/bin/time; its JSON line and its peak RSS in MB."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        prefix = [TIME, "-f", "%M", "-o", rss.name] if Path(TIME).exists() else []
        out = subprocess.run(prefix + cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{cmd[:3]} failed:\n{out.stderr[-2000:]}")
        peak = float(rss.read().strip().splitlines()[-1]) / 1024 if prefix else float("nan")
    return json.loads(out.stdout.strip().splitlines()[-1]), peak


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2", help="worker processes to try, e.g. 1,2")
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--dest-root", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--list", help=argparse.SUPPRESS)
    parser.add_argument("--dest", help=argparse.SUPPRESS)
    parser.add_argument("--keep", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client_main(args.client, args.list, args.dest, args.shard_size, args.keep))
        return 0

    with tempfile.TemporaryDirectory(prefix="nbdl-bench-dist-") as tmp:
        scratch = Path(tmp)
        with file_server(scratch / "nginx") as (base, served_by):
            listing = scratch / "list.txt"
            with listing.open("w") as fh:
                fh.writelines(f"{base}/f{i:07d}.bin?size={SMALL}\n" for i in range(args.count))
            print(f"{args.count:,} x 10 KiB from {served_by}; {os.cpu_count()} cores", flush=True)
            rows = []

            def fresh_dest() -> Path:
                return Path(tempfile.mkdtemp(prefix="nbdl-dest-", dir=args.dest_root))

            dest = fresh_dest()
            try:
                data, rss = timed(
                    [PY, str(HERE / "run_nbdl.py"), "--dest", str(dest), "--workers",
                     str(PER_WORKER), "--per-host", str(PER_WORKER), "--list", str(listing)]
                )  # fmt: skip
            finally:
                shutil.rmtree(dest)
            rows.append(("nbdl.fetch, 1 process", data["elapsed"], rss, "", ""))
            print(rows[-1], flush=True)
            configs = [(int(w), "auto") for w in args.workers.split(",")]
            # How a huge run goes: counts and failures only on the client.
            configs.append((configs[-1][0], "failures"))
            for workers, keep in configs:
                with cluster(workers, scratch) as address:
                    dest = fresh_dest()
                    try:
                        data, rss = timed(
                            [PY, __file__, "--client", address, "--list", str(listing),
                             "--dest", str(dest), "--shard-size", str(args.shard_size),
                             "--keep", keep]
                        )  # fmt: skip
                    finally:
                        shutil.rmtree(dest)
                assert data["failed"] == 0, data
                worker_rss = data["worker_rss_mb"]
                assert isinstance(worker_rss, list)
                plural = "es" if workers > 1 else ""
                rows.append(
                    (
                        f"nbdl.distributed, {workers} worker process{plural}, keep={keep!r}",
                        data["elapsed"],
                        rss,
                        ", ".join(f"{mb:.0f}" for mb in worker_rss),
                        str(data["shards"]),
                    )
                )
                print(rows[-1], flush=True)
    print()
    print("| configuration | files/s | client peak RSS (MB) | worker peak RSS (MB) | shards |")
    print("|---|---|---|---|---|")
    for name, elapsed, rss, workers_rss, shards in rows:
        assert isinstance(elapsed, float)
        print(
            f"| {name} | {args.count / elapsed:,.0f} | {rss:.0f} | {workers_rss or '-'} | "
            f"{shards or '-'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
