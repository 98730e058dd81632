"""nbdl.distributed on a real LocalCluster (two worker processes) and a real local server."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

import nbdl  # noqa: E402  (after the skip: nbdl.distributed needs distributed)
import nbdl.distributed  # noqa: E402
from nbdl._cli import main  # noqa: E402
from nbdl._urls import redact_url  # noqa: E402
from nbdl.distributed._shard import shard_key  # noqa: E402
from nbdl.testing import LocalServer, content_for  # noqa: E402

from .conftest import FAST_RETRY  # noqa: E402

Client = distributed.Client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two worker processes of one thread each, started once for the file.

    In processes of their own, as on a real cluster (``dask scheduler`` + ``dask worker
    --nworkers 2``, each worker under a nanny that restarts it): the test process is only the
    client, so its traced memory is the client's.
    """
    folder = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{_free_port()}"
    log = (folder / "cluster.log").open("wb")
    common = ["--host", "127.0.0.1", "--no-dashboard"]
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", *common,
         "--port", address.rsplit(":", 1)[1]],
        stdout=log, stderr=log,
    )  # fmt: skip
    workers = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, *common,
         "--nworkers", "2", "--nthreads", "1", "--local-directory", str(folder)],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        with Client(address, timeout=60) as ready:
            ready.wait_for_workers(2, timeout=60)
        yield address
    finally:
        _stop(workers)
        _stop(scheduler)
        log.close()


@pytest.fixture
async def client(scheduler: str) -> AsyncIterator[distributed.Client]:
    """An asynchronous client on the test's event loop, as in a notebook cell."""
    async with Client(scheduler, asynchronous=True, timeout=60) as c:
        await c.wait_for_workers(2, timeout=60)
        yield c


def _shard_records(dest: Path) -> list[dict[str, object]]:
    folder = dest / ".nbdl" / "shards"
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


class _Seen(nbdl.DownloadTracker):
    """Remembers every patch it was told, to see what the display was fed."""

    def __init__(self) -> None:
        super().__init__()
        self.patches: list[tuple[str, nbdl.PatchDownloadInfo]] = []
        self.started = self.closed = 0

    def patch_download(self, url: str, patch: nbdl.PatchDownloadInfo) -> None:
        super().patch_download(url, patch)
        self.patches.append((url, patch))

    def start(self) -> None:
        self.started += 1

    def close(self) -> None:
        self.closed += 1


async def test_files_are_byte_exact_and_results_in_input_order(
    client: distributed.Client, server: LocalServer, tmp_path: Path
) -> None:
    """Every file lands byte-exact; results follow the manifest order across 7 shards."""
    sizes = [1000 + 97 * i for i in range(25)]
    items: list[str | nbdl.FileConfig] = [
        server.url(f"/data/f{i:02d}.bin", size=size) for i, size in enumerate(sizes)
    ]
    items[3] = nbdl.FileConfig(str(items[3]), filename="third.bin", priority=5)
    missing = server.url("/data/gone.bin", fail="404")
    items.insert(11, missing)
    dest = tmp_path / "out"
    results = await nbdl.distributed.fetch(
        items, dest, client=client, shard_size=4, tracker="none", retries=FAST_RETRY
    )
    assert isinstance(results, nbdl.distributed.ClusterResults)
    assert [i.url for i in results] == [i if isinstance(i, str) else i.url for i in items]
    assert len(results.shards) == 7
    assert results.total == 26
    assert results.complete
    assert [s.first for s in results.shards] == [0, 4, 8, 12, 16, 20, 24]
    assert {s.worker for s in results.shards} == set(await client.nthreads())
    failed = results.failed
    assert [i.url for i in failed] == [missing]
    assert failed[0].http_status == 404
    assert not results.ok
    assert results.failed_count == 1
    assert results.completed_count == 25
    done = [i for i in results if i.url != missing]
    for n, (info, size) in enumerate(zip(done, sizes, strict=True)):
        assert info.path.read_bytes() == content_for(f"f{n:02d}.bin", size)
    assert results[3].path == dest / "third.bin"
    # One record per shard, written atomically: no temporary file is left.
    records = _shard_records(dest)
    assert len(records) == 7
    assert sorted(r["status"] for r in records) == ["done"] * 6 + ["partial"]
    assert not list((dest / ".nbdl" / "shards").glob("*.tmp"))


async def test_a_rerun_costs_no_request(
    client: distributed.Client, server: LocalServer, tmp_path: Path
) -> None:
    """Run again: shards answer from their records; without records, complete files are skipped."""
    urls = [server.url(f"/data/r{i}.bin", size=5000) for i in range(12)]
    dest = tmp_path / "out"
    first = await nbdl.distributed.fetch(urls, dest, client=client, shard_size=5, tracker="none")
    assert first.ok
    assert not any(s.from_record for s in first.shards)
    server.reset_stats()
    again = await nbdl.distributed.fetch(urls, dest, client=client, shard_size=5, tracker="none")
    assert server.requests == []
    assert again.ok
    assert all(s.from_record for s in again.shards)
    assert [i.path for i in again] == [i.path for i in first]
    assert all(i.from_cache and i.bytes_downloaded == 5000 for i in again)
    for path in (dest / ".nbdl" / "shards").iterdir():
        path.unlink()
    third = await nbdl.distributed.fetch(urls, dest, client=client, shard_size=5, tracker="none")
    assert server.requests == []
    assert third.ok
    assert not any(s.from_record for s in third.shards)
    assert all(i.from_cache for i in third)


async def test_a_worker_killed_mid_shard_is_retried_elsewhere_and_resumes(
    client: distributed.Client, server: LocalServer, tmp_path: Path
) -> None:
    """SIGKILL the worker running a slow shard: another worker resumes the .part with Range."""
    size = 3 * 1024 * 1024
    url = server.url("/data/slow.bin", size=size, rate=1024 * 1024)
    dest = tmp_path / "out"
    task = asyncio.create_task(
        nbdl.distributed.fetch([url], dest, client=client, tracker="none", retries=FAST_RETRY)
    )
    part = dest / "slow.bin.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= 512 * 1024):
        assert time.monotonic() < deadline
        assert not task.done()
        await asyncio.sleep(0.05)
    processing = await client.processing()
    (victim,) = [addr for addr, keys in processing.items() if keys]
    pid = (await client.run(os.getpid, workers=[victim]))[victim]
    os.kill(pid, signal.SIGKILL)
    results = await asyncio.wait_for(task, 90)
    assert results.ok, results
    assert results[0].path.read_bytes() == content_for("slow.bin", size)
    assert results.shards[0].worker != victim
    gets = [r for r in server.requests_for("/data/slow.bin") if r.method == "GET"]
    assert len(gets) == 2
    resumed_from = int(gets[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert resumed_from >= 512 * 1024
    await client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests


#: A client process that fetches a manifest on the cluster, then is killed by the test.
CLIENT = """
import asyncio, sys
from distributed import Client
import nbdl.distributed

async def run():
    async with Client(sys.argv[1], asynchronous=True) as client:
        await nbdl.distributed.fetch(sys.argv[2], sys.argv[3], client=client, shard_size=4,
                                     tracker="none", max_workers=1)

asyncio.run(run())
"""


async def test_a_new_run_after_the_client_crashed_does_only_what_is_left(
    client: distributed.Client,
    scheduler: str,
    server: LocalServer,
    tmp_path: Path,
) -> None:
    """SIGKILL the client after its first shard: a new run skips that shard with no request."""
    fast = [server.url(f"/data/quick{i}.bin", size=2000) for i in range(4)]
    slow = [server.url(f"/data/slow{i}.bin", size=400_000, rate=400_000) for i in range(4)]
    manifest = tmp_path / "list.txt"
    manifest.write_text("# a manifest file, streamed\n" + "\n".join(fast + slow) + "\n")
    dest = tmp_path / "out"
    proc = subprocess.Popen(  # noqa: ASYNC220  (started once; the test then polls files)
        [sys.executable, "-c", textwrap.dedent(CLIENT), scheduler,
         str(manifest), str(dest)],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any(r["status"] == "done" for r in _shard_records(dest)):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the first shard never finished"
            await asyncio.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert len(_shard_records(dest)) == 1  # the slow shard was still running
    server.reset_stats()
    results = await nbdl.distributed.fetch(
        manifest, dest, client=client, shard_size=4, tracker="none"
    )
    assert results.ok
    # The first shard answers from its record; the second (which the crashed client's task may
    # still be running: nbdl's file locks share the work) downloads what is left.
    assert results.shards[0].from_record
    assert results.shards[0].count == 4
    asked = {r.path for r in server.requests}
    assert asked
    assert asked <= {f"/data/slow{i}.bin" for i in range(4)}
    for i in range(4):
        assert (dest / f"slow{i}.bin").read_bytes() == content_for(f"slow{i}.bin", 400_000)


async def test_progress_reaches_the_tracker_while_files_download(
    client: distributed.Client, server: LocalServer, tmp_path: Path
) -> None:
    """The display gets in-progress bytes from the workers, throttled, then the final states."""
    size = 1024 * 1024
    urls = [server.url(f"/data/p{i}.bin", size=size, rate=512 * 1024) for i in range(2)]
    seen = _Seen()
    results = await nbdl.distributed.fetch(urls, tmp_path, client=client, tracker=seen)
    assert results.ok
    assert seen.started == 1
    assert seen.closed == 1
    assert [i.url for i in seen.downloads()] == urls
    moving = [
        p
        for _, p in seen.patches
        if p.status is nbdl.DownloadStatus.IN_PROGRESS and 0 < (p.bytes_downloaded or 0) < size
    ]
    assert moving, "no progress arrived before the end"
    # About two messages a second per worker, never one per chunk (16 chunks per file here).
    assert len(seen.patches) < 2 * (2 * 2 * 4 + 2)
    assert all(seen.get(url).status is nbdl.DownloadStatus.COMPLETED for url in urls)


async def test_huge_runs_keep_counts_failures_and_one_row_per_shard(
    client: distributed.Client, server: LocalServer, tmp_path: Path
) -> None:
    """keep="failures": only failed files come back; the display has a row per shard."""
    urls = [server.url(f"/data/h{i}.bin", size=100) for i in range(9)]
    urls[7] = server.url("/data/h-missing.bin", fail="404")
    seen = _Seen()
    results = await nbdl.distributed.fetch(
        urls, tmp_path, client=client, shard_size=3, keep="failures", tracker=seen
    )
    assert not results.complete
    assert results.total == 9
    assert [i.url for i in results] == [urls[7]]
    assert results.completed_count == 8
    assert not results.ok
    rows = seen.downloads()
    assert [r.url for r in rows] == ["nbdl-shard:0", "nbdl-shard:1", "nbdl-shard:2"]
    assert [r.status.value for r in rows] == ["completed", "completed", "failed"]
    assert rows[2].error == "1 of 3 files failed"
    assert "9 files in 3 shards: 8 completed, 1 failed" in repr(results)


async def test_a_streamed_manifest_keeps_the_client_bounded(
    client: distributed.Client, tmp_path: Path
) -> None:
    """100,000 lines stream through the client: its traced memory stays far below the whole."""
    count = 100_000
    # tmpfs when there is one: creating 100,000 files on ext4 alone takes seconds.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as folder:
        dest = Path(folder)
        names = [f"f{i:06d}.bin" for i in range(count)]
        for name in names:  # complete already: the workers skip them without a request
            os.close(os.open(dest / name, os.O_CREAT | os.O_WRONLY, 0o644))
        manifest = tmp_path / "big.txt"
        with manifest.open("w") as file:
            file.writelines(f"http://127.0.0.1:9/data/{name}\n" for name in names)
        tracemalloc.start()
        try:
            results = await nbdl.distributed.fetch(
                manifest, dest, client=client, shard_size=2000, keep="failures", tracker="none"
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert results.ok
    assert results.total == count
    assert len(results) == 0
    assert len(results.shards) == 50
    # The whole manifest as records is ~60 MB here (tests/test_memory.py: < 1 KB per entry).
    # ~2 MB measured: a few shards in flight, whatever the manifest's length.
    assert peak < 8_000_000, f"client peak {peak / 1e6:.1f} MB"


async def test_an_ordinary_client_works_from_a_running_loop(
    scheduler: str, server: LocalServer, tmp_path: Path
) -> None:
    """A synchronous Client (its own loop thread) also works: its calls run off our loop."""
    sync_client = await asyncio.to_thread(Client, scheduler)
    try:
        urls = [server.url(f"/data/s{i}.bin", size=3000) for i in range(5)]
        results = await nbdl.distributed.fetch(
            urls, tmp_path, client=sync_client, shard_size=2, tracker="none"
        )
    finally:
        await asyncio.to_thread(sync_client.close)
    assert results.ok
    assert [i.url for i in results] == urls
    assert results[4].path.read_bytes() == content_for("s4.bin", 3000)


async def test_bad_input_fails_before_any_request(
    client: distributed.Client, server: LocalServer, tmp_path: Path
) -> None:
    """A bad manifest line, a single URL, a bad setting: a clear error and no request."""
    manifest = tmp_path / "list.txt"
    good = server.url("/data/ok.bin")
    manifest.write_text(f"{good}\n# fine\n{good}2  priority=high\n")
    with pytest.raises(nbdl.InvalidConfigError, match=r"list.txt line 3: priority must"):
        await nbdl.distributed.fetch(manifest, tmp_path / "o", client=client, tracker="none")
    with pytest.raises(nbdl.InvalidConfigError, match="single URL"):
        await nbdl.distributed.fetch(good, tmp_path / "o", client=client)
    with pytest.raises(nbdl.InvalidConfigError, match="shard_size"):
        await nbdl.distributed.fetch([good], tmp_path / "o", client=client, shard_size=0)
    with pytest.raises(nbdl.InvalidConfigError, match=r"distributed\.Client"):
        await nbdl.distributed.fetch([good], tmp_path / "o", client="tcp://127.0.0.1:1")  # type: ignore[arg-type]
    with pytest.raises(nbdl.InvalidConfigError, match=r"item 3: .*both be saved"):
        await nbdl.distributed.fetch(
            [good, server.url("/data/b"), server.url("/data/c"), good + "?v=2"],
            tmp_path / "o",
            client=client,
            tracker="none",
        )
    assert server.requests == []
    with pytest.raises(nbdl.InvalidConfigError, match="cannot read the manifest"):
        await nbdl.distributed.fetch(tmp_path / "nope.txt", tmp_path / "o", client=client)


async def test_the_command_line_runs_on_a_scheduler(
    scheduler: str, server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nbdl fetch -i LIST --scheduler ADDRESS` downloads on the cluster; exit 0, or 2 if down."""
    urls = [server.url(f"/data/c{i}.bin", size=700 + i) for i in range(6)]
    manifest = tmp_path / "list.txt"
    manifest.write_text("\n".join(urls) + "\n")
    dest = tmp_path / "out"
    args = ["fetch", "-i", str(manifest), "-o", str(dest), "--quiet"]
    address = scheduler
    status = await asyncio.to_thread(main, [*args, "--scheduler", address, "--shard-size", "4"])
    assert status == 0
    assert sorted(p.name for p in dest.glob("c*.bin")) == [f"c{i}.bin" for i in range(6)]
    assert (dest / "c5.bin").read_bytes() == content_for("c5.bin", 705)
    assert len(_shard_records(dest)) == 2
    # --json: one line per item, in input order (every record is kept for it); all cached now.
    capsys.readouterr()
    json_args = ["fetch", "-i", str(manifest), "-o", str(dest), "--json", "--scheduler", address]
    assert await asyncio.to_thread(main, json_args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["index"], r["url"], r["from_cache"]) for r in lines] == [
        (i, redact_url(url), True) for i, url in enumerate(urls)
    ]


async def test_the_readme_example_runs(
    scheduler: str, server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's Dask cell works as written, pointed at the local cluster and server."""
    readme = (Path(__file__).parent.parent / "README.md").read_text("utf-8")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "Client(" in b]
    manifest = tmp_path / "laion-part-00.txt"
    manifest.write_text("".join(server.url(f"/data/l{i}.jpg") + "\n" for i in range(5)))
    code = code.replace("tcp://scheduler:8786", scheduler).replace("/shared/laion", "out")
    code += "\nawait client.close()\n"
    monkeypatch.chdir(tmp_path)
    compiled = compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, object] = {}
    coroutine = types.FunctionType(compiled, namespace)()
    if coroutine is not None:
        await coroutine
    results = namespace["results"]
    assert isinstance(results, nbdl.distributed.ClusterResults)
    assert results.ok
    assert (tmp_path / "out" / "l4.jpg").read_bytes() == content_for("l4.jpg", 1024)


async def test_links_and_forged_records_in_the_shards_folder_are_never_followed(
    client: distributed.Client, server: LocalServer, tmp_path: Path
) -> None:
    """A link planted at .nbdl/shards is not written through; a forged record is not trusted."""
    urls = [server.url(f"/data/k{i}.bin", size=900) for i in range(3)]
    dest, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (dest / ".nbdl").mkdir(parents=True)
    (dest / ".nbdl" / "shards").symlink_to(outside)
    results = await nbdl.distributed.fetch(urls, dest, client=client, tracker="none")
    assert results.ok
    assert list(outside.iterdir()) == []
    assert (dest / "k2.bin").read_bytes() == content_for("k2.bin", 900)
    # A record under the right name whose file names leave the folder: ignored, files checked.
    (dest / ".nbdl" / "shards").unlink()
    (dest / ".nbdl" / "shards").mkdir()
    key = shard_key(str(dest), urls)
    forged = {"key": key, "status": "done", "files": [["../../x", 900]] * 3}
    (dest / ".nbdl" / "shards" / f"{key}.json").write_text(json.dumps(forged))
    server.reset_stats()
    again = await nbdl.distributed.fetch(urls, dest, client=client, tracker="none")
    assert again.ok
    assert not again.shards[0].from_record
    assert [i.path for i in again] == [dest / f"k{i}.bin" for i in range(3)]
    assert server.requests == []  # the files were complete: looked at, not downloaded


async def test_cancelling_the_cell_cancels_the_shards_and_keeps_part_files(
    client: distributed.Client, server: LocalServer, tmp_path: Path
) -> None:
    """An interrupt cancels the run: CancelledError, the display closed, the .part file kept."""
    size = 2 * 1024 * 1024
    url = server.url("/data/cancel.bin", size=size, rate=512 * 1024)
    seen = _Seen()
    task = asyncio.create_task(nbdl.distributed.fetch([url], tmp_path, client=client, tracker=seen))
    part = tmp_path / "cancel.bin.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 0):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen.closed == 1
    assert seen.get(url).status is nbdl.DownloadStatus.CANCELLED
    await asyncio.sleep(1)  # the worker's task was cancelled: the partial file stops growing
    grown = part.stat().st_size
    await asyncio.sleep(1)
    assert 0 < part.stat().st_size == grown < size
    assert not (tmp_path / "cancel.bin").exists()


async def test_a_memory_store_destination_is_refused_clearly(client: distributed.Client) -> None:
    """dest='memory://...' is a clear error: each worker process would have a store of its own."""
    with pytest.raises(nbdl.InvalidConfigError, match="memory:// store of its own"):
        await nbdl.distributed.fetch(["http://127.0.0.1:9/a"], "memory://x", client=client)


async def test_an_s3_destination_gets_every_object_and_a_rerun_costs_no_request(
    client: distributed.Client, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dest='s3://bucket/prefix' (moto's S3 server): objects byte-exact; re-run: no request."""
    pytest.importorskip("obstore")
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    host, port = s3.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ALLOW_HTTP": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The workers are processes of their own, started before this test: they read obstore's
    # settings from their own environment.
    await client.run(os.environ.update, env)
    try:
        boto = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        boto.create_bucket(Bucket="nbdl-dask")
        urls = [server.url(f"/data/o{i}.bin", size=3000 + i) for i in range(5)]
        results = await nbdl.distributed.fetch(
            urls, "s3://nbdl-dask/run", client=client, shard_size=2, tracker="none"
        )
        assert results.ok
        assert [i.url for i in results] == urls
        for i in range(5):
            got = boto.get_object(Bucket="nbdl-dask", Key=f"run/o{i}.bin")["Body"].read()
            assert got == content_for(f"o{i}.bin", 3000 + i)
        server.reset_stats()
        again = await nbdl.distributed.fetch(
            urls, "s3://nbdl-dask/run", client=client, shard_size=2, tracker="none"
        )
        assert again.ok
        assert server.requests == []
    finally:
        await client.run(lambda: [os.environ.pop(key, None) for key in env])
        s3.stop()


async def test_the_command_line_says_when_the_scheduler_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scheduler that does not answer: one line on stderr, exit status 2, nothing written."""
    import nbdl.distributed._cli as cluster_cli

    monkeypatch.setattr(cluster_cli, "CONNECT_TIMEOUT", 1)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    args = ["fetch", "http://127.0.0.1:9/a.bin", "-o", str(tmp_path / "o"), "--quiet"]
    status = await asyncio.to_thread(main, [*args, "--scheduler", address])
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"nbdl: error: cannot reach the Dask scheduler at {address}")
    assert not (tmp_path / "o").exists()


@pytest.mark.timeout(180)
def test_a_notebook_cell_awaits_the_cluster_on_the_kernels_loop(
    scheduler: str, server: LocalServer, tmp_path: Path
) -> None:
    """In a real kernel: an asynchronous Client on the kernel's loop, widget bars fed by workers."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    urls = [server.url(f"/data/n{i}.bin", size=300_000, rate=600_000) for i in range(3)]
    nb = nbformat.v4.new_notebook()
    cells = [
        "import asyncio\nfrom distributed import Client\nimport nbdl, nbdl.distributed",
        f"client = await Client({scheduler!r}, asynchronous=True)\n"
        "assert client.loop.asyncio_loop is asyncio.get_running_loop()",
        "tracker = nbdl.NotebookTracker(bar_delay=0)\n"
        f"results = await nbdl.distributed.fetch({urls!r}, 'out', client=client, "
        "tracker=tracker, shard_size=2)",
        "assert results.ok, results\n"
        "assert [i.status.value for i in tracker.downloads()] == ['completed'] * 3\n"
        "await client.close()\nprint('cell-ok')",
    ]
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    runner = nbclient.NotebookClient(
        nb,
        timeout=90,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    runner.execute()
    assert "cell-ok" in "".join(o.get("text", "") for o in nb.cells[3].outputs)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    progress = [m["state"] for m in state.values() if m["model_name"] == "FloatProgressModel"]
    seen = [(p.get("max"), p.get("value"), p.get("bar_style")) for p in progress]
    # The overall bar, full and green; file bars (a file done between two progress messages
    # gets none, as with nbdl.fetch) all full and green.
    assert (900_000, 900_000, "success") in seen
    files = [bar for bar in seen if bar[0] != 900_000]
    assert files
    assert set(files) == {(300_000, 300_000, "success")}
    assert (tmp_path / "out" / "n2.bin").read_bytes() == content_for("n2.bin", 300_000)
