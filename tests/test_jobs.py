"""``nbdl.start``: background jobs, their handle, cancel, and two jobs for the same files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import nbdl
from nbdl._notebook import NotebookTracker
from nbdl.testing import LocalServer


def gets(server: LocalServer, path: str) -> int:
    """How many GET requests ``path`` received."""
    return sum(1 for r in server.requests_for(path) if r.method == "GET")


async def until_part_file(path: Path) -> None:
    """Wait until the partial file of ``path`` holds some bytes."""
    part = path.with_name(path.name + ".part")
    for _ in range(500):
        if part.exists() and part.stat().st_size > 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{part} never appeared")


async def test_start_returns_at_once_and_await_gives_results(
    server: LocalServer, dest: Path
) -> None:
    """start() returns a running job; awaiting it gives Results; results is None until done."""
    urls = [server.url(f"/data/j{i}.bin", size=400_000, rate=1_000_000) for i in range(2)]
    job = nbdl.start(urls, dest=dest, tracker="none")
    assert isinstance(job, nbdl.DownloadJob)
    assert not job.done()
    assert job.results is None
    assert "running" in repr(job)
    results = await job
    assert results.ok
    assert job.done()
    assert job.results is results
    assert [p.name for p in results.paths] == ["j0.bin", "j1.bin"]
    assert not job.cancel(), "an ended job cannot be cancelled"


async def test_start_validates_before_returning(server: LocalServer, dest: Path) -> None:
    """Bad items or options raise at start(), before any job or request exists."""
    with pytest.raises(nbdl.InvalidConfigError, match="item 1"):
        nbdl.start([server.url("/data/a.bin"), "ftp://nope/x"], dest=dest)
    with pytest.raises(nbdl.InvalidConfigError, match="max_workers"):
        nbdl.start([server.url("/data/a.bin")], dest=dest, max_workers=0)
    with pytest.raises(TypeError, match="max_worker"):
        nbdl.start([server.url("/data/a.bin")], dest=dest, max_worker=2)  # type: ignore[call-arg]
    with pytest.raises(nbdl.InvalidConfigError, match="wrap a single one"):
        nbdl.start(server.url("/data/a.bin"), dest=dest)
    assert server.requests == []


def test_start_without_a_running_loop_points_to_fetch_sync(dest: Path) -> None:
    """start() in plain sync code raises a RuntimeError that names fetch_sync."""
    with pytest.raises(RuntimeError, match="fetch_sync"):
        nbdl.start(["http://127.0.0.1:9/a.bin"], dest=dest)


async def test_cancel_keeps_part_files_and_reports_cancelled(
    server: LocalServer, dest: Path
) -> None:
    """job.cancel() stops the downloads: .part stays, no final file, results say cancelled."""
    url = server.url("/data/big.bin", size=3_000_000, rate=1_000_000)
    job = nbdl.start([url], dest=dest, tracker="none")
    await until_part_file(dest / "big.bin")
    assert job.cancel()
    results = await job
    assert [info.status for info in results] == [nbdl.DownloadStatus.CANCELLED]
    assert results.cancelled[0].error == "cancelled"
    assert (dest / "big.bin.part").stat().st_size > 0
    assert not (dest / "big.bin").exists()
    assert job.done()


async def test_cancel_before_the_batch_started_reports_every_file(
    server: LocalServer, dest: Path
) -> None:
    """A job cancelled before its task ran still gives one cancelled result per item."""
    urls = [server.url("/data/a.bin"), server.url("/data/b.bin"), server.url("/data/a.bin")]
    job = nbdl.start(urls, dest=dest, tracker="none")
    job.cancel()
    results = await job
    assert len(results) == 3
    assert {info.status for info in results} == {nbdl.DownloadStatus.CANCELLED}


async def test_cancelling_the_awaiting_task_leaves_the_job_running(
    server: LocalServer, dest: Path
) -> None:
    """An interrupt of the cell awaiting a job stops the waiting, not the job."""
    url = server.url("/data/bg.bin", size=800_000, rate=1_000_000)
    job = nbdl.start([url], dest=dest, tracker="none")
    waiter = asyncio.create_task(_await(job))
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not job.done()
    results = await job
    assert results.ok


async def _await(job: nbdl.DownloadJob) -> nbdl.Results:
    return await job


async def test_second_job_for_the_same_files_waits_and_downloads_once(
    server: LocalServer, dest: Path
) -> None:
    """A job for files a running job is writing waits for it; each file is fetched once."""
    urls = [server.url(f"/data/s{i}.bin", size=500_000, rate=2_000_000) for i in range(2)]
    first = nbdl.start(urls, dest=dest, tracker="none")
    second = nbdl.start(urls[1:], dest=dest, tracker="none")
    assert second.waiting_for == [first]
    assert "waiting" in repr(second)
    one, two = await first, await second
    assert one.ok
    assert two.ok
    assert two[0].from_cache
    assert gets(server, "/data/s1.bin") == 1


async def test_cancelling_a_waiting_job_leaves_the_first_running(
    server: LocalServer, dest: Path
) -> None:
    """Cancelling the job that waits does not cancel the job it waits for."""
    url = server.url("/data/w.bin", size=600_000, rate=2_000_000)
    first = nbdl.start([url], dest=dest, tracker="none")
    second = nbdl.start([url], dest=dest, tracker="none")
    await asyncio.sleep(0.05)
    second.cancel()
    assert (await second).cancelled
    assert (await first).ok


async def test_cancel_button_cancels_the_job(server: LocalServer, dest: Path) -> None:
    """The tracker's Cancel button is wired to job.cancel(): results come back cancelled."""
    tracker = NotebookTracker(refresh_interval=60)
    url = server.url("/data/btn.bin", size=3_000_000, rate=1_000_000)
    job = nbdl.start([url], dest=dest, tracker=tracker)
    assert len(tracker.bars) == 1, "bars are made in the calling cell, before the task runs"
    await until_part_file(dest / "btn.bin")
    tracker.cancel_button.click()
    results = await job
    assert results.cancelled
    assert tracker.cancel_button.description == "Cancelled"
    assert (dest / "btn.bin.part").exists()


@pytest.mark.parametrize("front_door", ["start", "fetch_sync"])
async def test_a_batch_is_validated_and_queued_once(
    server: LocalServer, dest: Path, monkeypatch: pytest.MonkeyPatch, front_door: str
) -> None:
    """Start and fetch_sync run the very plan they validated: each item is queued once."""
    queued: list[object] = []
    original = nbdl.DownloadManager.add_to_queue

    def counting(self: nbdl.DownloadManager, item: str | nbdl.FileConfig) -> nbdl.DownloadInfo:
        """Count, then queue as usual."""
        queued.append(item)
        return original(self, item)

    monkeypatch.setattr(nbdl.DownloadManager, "add_to_queue", counting)
    urls = [server.url(f"/data/once{i}.bin", size=1000) for i in range(3)]
    if front_door == "start":
        results = await nbdl.start(urls, dest=dest, tracker="none")
    else:
        results = await asyncio.to_thread(nbdl.fetch_sync, urls, dest=dest, tracker="none")
    assert [info.status for info in results] == [nbdl.DownloadStatus.COMPLETED] * 3
    assert queued == urls
