"""Lifecycle hooks: each event once, in order per file, off the download path."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

import nbdl
from nbdl.testing import LocalServer

from .conftest import FAST_RETRY

ALL = [kind.value for kind in nbdl.EventKind]


class Recorder:
    """A plain hook that records every event (from its worker thread)."""

    def __init__(self) -> None:
        self.events: list[nbdl.DownloadEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: nbdl.DownloadEvent) -> None:
        with self.lock:
            self.events.append(event)

    def hooks(self, **options: float) -> nbdl.Hooks:
        hooks = nbdl.Hooks(**options)
        for kind in ALL:
            hooks.on(kind, self)
        return hooks

    def by_file(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = defaultdict(list)
        for event in self.events:
            found[event.info.filename].append(event.kind.value)
        return dict(found)


async def test_each_event_fires_once_in_order_with_the_files_record(
    server: LocalServer, dest: Path
) -> None:
    """A completed, a retried and a failed file each get their events once, in order."""
    recorder = Recorder()
    urls = [
        server.url("/data/ok.bin", size=1000),
        server.url("/data/retried.bin", size=1000, fail="503"),
        server.url("/data/missing.bin", size=10, fail="404"),
    ]
    results = await nbdl.fetch(
        urls, dest, tracker="none", retries=FAST_RETRY, hooks=recorder.hooks()
    )
    assert recorder.by_file() == {
        "ok.bin": ["queued", "started", "completed"],
        "retried.bin": ["queued", "started", "retrying", "completed"],
        "missing.bin": ["queued", "started", "failed"],
    }
    final = {e.info.filename: e.info for e in recorder.events if e.kind.value != "queued"}
    assert final["ok.bin"] == results[0]
    assert final["missing.bin"].http_status == 404
    retrying = next(e for e in recorder.events if e.kind is nbdl.EventKind.RETRYING)
    assert retrying.info.attempts == 2
    assert "503" in (retrying.info.note or "")
    queued = [e for e in recorder.events if e.kind is nbdl.EventKind.QUEUED]
    assert all(e.info.status is nbdl.DownloadStatus.QUEUED for e in queued)
    times = [e.time for e in recorder.events if e.info.filename == "ok.bin"]
    assert times == sorted(times)


async def test_processed_comes_before_completed_and_carries_the_output(
    server: LocalServer, dest: Path
) -> None:
    """A file that went through processors gets 'processed' (with its output), then 'completed'."""

    class Marker:
        label = "marking"

        def process(self, job: nbdl.ProcessJob) -> Path | None:
            out = job.path.with_suffix(".done")
            out.write_text("ok")
            return out

    recorder = Recorder()
    url = server.url("/data/p.bin", size=100)
    await nbdl.fetch([url], dest, tracker="none", processors=[Marker()], hooks=recorder.hooks())
    assert recorder.by_file() == {"p.bin": ["queued", "started", "processed", "completed"]}
    processed = recorder.events[2]
    assert processed.info.output == dest / "p.done"


async def test_cancel_fires_cancelled_for_running_and_queued_files(
    server: LocalServer, dest: Path
) -> None:
    """Cancelling a batch tells the hooks 'cancelled' once per unfinished file."""
    recorder = Recorder()
    urls = [server.url(f"/data/slow{i}.bin", size=2_000_000, rate=500_000) for i in range(3)]
    task = asyncio.create_task(
        nbdl.fetch(urls, dest, tracker="none", max_workers=1, hooks=recorder.hooks())
    )
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.by_file() == {
        "slow0.bin": ["queued", "started", "cancelled"],
        "slow1.bin": ["queued", "cancelled"],
        "slow2.bin": ["queued", "cancelled"],
    }


async def test_failing_hooks_are_logged_and_never_break_downloads(
    server: LocalServer, dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises (plain or async) is logged and counted; every file still completes."""

    def broken(event: nbdl.DownloadEvent) -> None:
        raise RuntimeError("hook bug")

    async def broken_async(event: nbdl.DownloadEvent) -> None:
        raise ValueError("async hook bug")

    hooks = nbdl.Hooks().on("completed", broken).on("started", broken_async)
    urls = [server.url(f"/data/f{i}.bin", size=100) for i in range(3)]
    with caplog.at_level(logging.ERROR, logger="nbdl"):
        results = await nbdl.fetch(urls, dest, tracker="none", hooks=hooks)
    assert results.ok
    assert hooks.errors == 6
    assert sum(
        "hook bug" in r.getMessage() or "hook bug" in str(r.exc_info) for r in caplog.records
    )


@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_slow_hooks_do_not_slow_the_batch(
    server: LocalServer, dest: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook sleeping 5 s per call costs the batch only its bounded wait at the end."""

    def slow(event: nbdl.DownloadEvent) -> None:
        time.sleep(5)

    async def slow_async(event: nbdl.DownloadEvent) -> None:
        await asyncio.sleep(5)

    hooks = nbdl.Hooks(wait=0.3).on("completed", slow if kind == "plain" else slow_async)
    urls = [server.url(f"/data/s{i}.bin", size=50_000) for i in range(10)]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="nbdl"):
        results = await nbdl.fetch(urls, dest, tracker="none", hooks=hooks)
    took = time.monotonic() - started
    assert results.ok
    assert took < 2.5, f"the batch took {took:.1f} s"
    assert hooks.dropped == 10  # one call in progress and nine queued behind it
    assert any("dropped" in r.getMessage() for r in caplog.records)


async def test_async_hooks_are_awaited_before_fetch_returns(
    server: LocalServer, dest: Path
) -> None:
    """Async hooks run on the batch's loop and have all run by the time fetch returns."""
    seen: list[tuple[str, str]] = []
    loop = asyncio.get_running_loop()

    async def hook(event: nbdl.DownloadEvent) -> None:
        assert asyncio.get_running_loop() is loop
        await asyncio.sleep(0.01)
        seen.append((event.kind.value, event.info.filename))

    urls = [server.url(f"/data/a{i}.bin", size=100) for i in range(5)]
    await nbdl.fetch(urls, dest, tracker="none", hooks={"queued": hook, "completed": [hook]})
    assert sorted(seen) == sorted(
        [("queued", f"a{i}.bin") for i in range(5)] + [("completed", f"a{i}.bin") for i in range(5)]
    )


async def test_files_found_complete_start_and_complete(server: LocalServer, dest: Path) -> None:
    """A re-run's cached files still get queued, started and completed (from_cache is set)."""
    url = server.url("/data/c.bin", size=100)
    await nbdl.fetch([url], dest, tracker="none")
    recorder = Recorder()
    await nbdl.fetch([url], dest, tracker="none", hooks=recorder.hooks())
    assert recorder.by_file() == {"c.bin": ["queued", "started", "completed"]}
    assert recorder.events[-1].info.from_cache


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ({"finished": [print]}, "unknown hook event 'finished'"),
        ({"completed": ["not callable"]}, "must be callable"),
        ([print], "hooks must be"),
    ],
)
async def test_bad_hooks_are_refused_before_any_request(hooks: object, message: str) -> None:
    """An unknown event, a non-callable or a wrong type is an InvalidConfigError."""
    with pytest.raises(nbdl.InvalidConfigError, match=message):
        await nbdl.fetch(["http://127.0.0.1:1/x"], ".", hooks=hooks)
    with pytest.raises(nbdl.InvalidConfigError):
        nbdl.Hooks(wait=-1)


async def test_background_jobs_take_hooks(server: LocalServer, dest: Path) -> None:
    """nbdl.start passes hooks through like fetch."""
    recorder = Recorder()
    job = nbdl.start(
        [server.url("/data/j.bin", size=10)], dest, tracker="none", hooks=recorder.hooks()
    )
    assert (await job).ok
    assert recorder.by_file() == {"j.bin": ["queued", "started", "completed"]}
