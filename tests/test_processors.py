"""Processors: steps run in a thread on each verified file (extraction is the built-in one)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

import nbdl
from nbdl.testing import LocalServer, content_for


class Upper:
    """Writes an upper-cased hex copy of the file next to it, once (a re-run finds it)."""

    label = "converting"

    def __init__(self) -> None:
        self.calls = 0
        self.work = 0
        self.threads: set[str] = set()

    def process(self, job: nbdl.ProcessJob) -> Path | None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        out = job.dest / (job.path.name + ".hex")
        if not out.exists():
            self.work += 1
            tmp = out.with_suffix(".tmp")
            tmp.write_text(job.path.read_bytes().hex().upper())
            tmp.rename(out)
        return out


class _Seen(nbdl.DownloadTracker):
    """Keeps every (status, note) pair reported."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[nbdl.DownloadStatus, str | None]] = []

    def patch_download(self, url: str, patch: nbdl.PatchDownloadInfo) -> None:
        super().patch_download(url, patch)
        info = self.get(url)
        self.seen.append((info.status, info.note))


async def test_processor_output_is_reported_and_rerun_does_no_work(
    server: LocalServer, dest: Path
) -> None:
    """The processor's result is DownloadInfo.output; a re-run calls it again, it does nothing."""
    upper = Upper()
    url = server.url("/data/p.bin", size=100)
    tracker = _Seen()
    results = await nbdl.fetch([url], dest, tracker=tracker, processors=[upper])
    info = results[0]
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.output == dest / "p.bin.hex"
    assert results.outputs == [dest / "p.bin.hex"]
    assert (dest / "p.bin.hex").read_text() == content_for("p.bin", 100).hex().upper()
    assert (nbdl.DownloadStatus.PROCESSING, "converting") in tracker.seen
    assert threading.main_thread().name not in upper.threads
    again = await nbdl.fetch([url], dest, tracker="none", processors=[upper])
    assert again[0].from_cache
    assert again[0].output == dest / "p.bin.hex"
    assert (upper.calls, upper.work) == (2, 1)
    assert len(server.requests_for("/data/p.bin")) == 1


class Broken:
    label = "converting"

    def process(self, job: nbdl.ProcessJob) -> Path | None:
        raise ValueError("no columns in the file")


async def test_processor_failure_fails_the_item_with_kind_process(
    server: LocalServer, dest: Path
) -> None:
    """An exception in a processor: FAILED, kind process, one line; the download stays."""
    results = await nbdl.fetch(
        [server.url("/data/b.bin", size=100)], dest, tracker="none", processors=[Broken()]
    )
    info = results[0]
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error_kind is nbdl.ErrorKind.PROCESS
    assert info.error == "converting failed: ValueError: no columns in the file"
    assert (dest / "b.bin").read_bytes() == content_for("b.bin", 100)
    with pytest.raises(ExceptionGroup) as caught:
        results.raise_for_errors()
    assert isinstance(caught.value.exceptions[0], nbdl.ProcessingError)


class Slow:
    """Reports progress, checks the cancel flag, and says how it ended."""

    label = "crunching"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ended = threading.Event()
        self.stopped_early = False

    def process(self, job: nbdl.ProcessJob) -> Path | None:
        try:
            steps = 20
            for step in range(steps):
                if job.cancelled.is_set():
                    self.stopped_early = True
                    return None
                job.progress(step, steps)
                time.sleep(self.seconds / steps)
            return None
        finally:
            self.ended.set()


async def test_processor_progress_reaches_the_display_off_the_loop(
    server: LocalServer, dest: Path
) -> None:
    """Progress shows as 'crunching N %'; the loop keeps running while the processor works."""
    slow = Slow(1.0)
    tracker = _Seen()
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while not slow.ended.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(heartbeat())
    await nbdl.fetch([server.url("/data/s.bin", size=10)], dest, tracker=tracker, processors=[slow])
    await beat
    notes = [note for status, note in tracker.seen if status is nbdl.DownloadStatus.PROCESSING]
    assert any(note and note.startswith("crunching ") and note.endswith(" %") for note in notes)
    assert ticks > 30  # 1 s of processing: the loop was free for its 10 ms beats


async def test_processing_overlaps_other_downloads(server: LocalServer, dest: Path) -> None:
    """While one file is processed, the others download (the worker waits, the batch goes on)."""
    first = nbdl.FileConfig(server.url("/data/a.bin", size=10), priority=5)
    rest = [server.url(f"/data/r{i}.bin", size=10, delay="0.1") for i in range(3)]

    class OnlyA(Slow):
        def process(self, job: nbdl.ProcessJob) -> Path | None:
            return super().process(job) if job.path.name == "a.bin" else None

    only_a = OnlyA(1.5)
    results = await nbdl.fetch([first, *rest], dest, tracker="none", processors=[only_a])
    assert results.ok
    a_done = results[0].finished_at or 0
    assert all((info.finished_at or 0) < a_done for info in results[1:])
    assert only_a.ended.is_set()


async def test_cancel_stops_the_processor_and_waits_for_it(server: LocalServer, dest: Path) -> None:
    """Cancelling the batch sets job.cancelled and returns only once the processor stopped."""
    slow = Slow(20)
    task = asyncio.create_task(
        nbdl.fetch([server.url("/data/c.bin", size=10)], dest, tracker="none", processors=[slow])
    )
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow.ended.is_set()
    assert slow.stopped_early


async def test_bad_processors_are_refused_before_any_request(
    server: LocalServer, dest: Path
) -> None:
    """Something that is not a processor: InvalidConfigError, nothing requested."""
    with pytest.raises(nbdl.InvalidConfigError, match="process"):
        await nbdl.fetch([server.url("/data/x.bin")], dest, processors=[object()])  # type: ignore[list-item]
    with pytest.raises(nbdl.InvalidConfigError, match="extract"):
        await nbdl.fetch([server.url("/data/x.bin")], dest, extract="yes")  # type: ignore[arg-type]
    assert server.requests == []


class ReturnsText:
    label = "converting"

    def process(self, job: nbdl.ProcessJob) -> Path | None:
        return "out.txt"  # type: ignore[return-value]


async def test_processor_returning_a_non_path_fails_clearly(
    server: LocalServer, dest: Path
) -> None:
    """A processor must return a Path or None: anything else is a clear process failure."""
    results = await nbdl.fetch(
        [server.url("/data/t.bin", size=10)], dest, tracker="none", processors=[ReturnsText()]
    )
    assert results[0].error_kind is nbdl.ErrorKind.PROCESS
    assert "not a Path" in (results[0].error or "")
