"""The notebook tracker, driven in-process: widget properties are inspected directly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import nbdl
from nbdl._notebook import (
    CellTracker,
    MessageBudget,
    NotebookTracker,
    TextNotebookTracker,
    make_notebook_tracker,
)
from nbdl._select import resolve_tracker
from nbdl.testing import LocalServer

from .conftest import FAST_RETRY


def parts(bar: Any) -> tuple[Any, Any, Any]:
    """The (left text, progress, right text) widgets of a tqdm.notebook bar."""
    ltext, pbar, rtext = bar.container.children
    return ltext, pbar, rtext


def text(widget: Any) -> str:
    """A text widget's value as a reader sees it (tqdm pads with figure spaces)."""
    return str(widget.value).replace("\u2007", " ")


def info(url: str, size: int | None = 1000) -> nbdl.DownloadInfo:
    return nbdl.DownloadInfo(url=url, path=Path("/tmp") / url.rsplit("/", 1)[-1], total_bytes=size)


async def until_in_progress(tracker: NotebookTracker, url: str) -> None:
    """Wait until the download of ``url`` has written some bytes."""
    for _ in range(500):
        current = tracker.get(url) if tracker.downloads() else None
        if current is not None and current.bytes_downloaded > 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the download never started")


@pytest.fixture(autouse=True)
def fresh_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty message budget (it is shared process-wide)."""
    monkeypatch.setattr(CellTracker, "budget", MessageBudget())


@pytest.fixture
def tracker() -> NotebookTracker:
    """A tracker that never draws by itself: tests call refresh()."""
    return NotebookTracker(refresh_interval=60)


async def test_bars_reach_totals_and_succeed(
    server: LocalServer, dest: Path, tracker: NotebookTracker
) -> None:
    """After a batch, every bar is full and green, the overall bar too, the table names all."""
    urls = [server.url(f"/data/f{i}.bin", size=200_000 + i) for i in range(3)]
    results = await nbdl.fetch(urls, dest=dest, tracker=tracker)
    assert results.ok
    assert len(tracker.bars) == 3
    for url, bar in tracker.bars.items():
        _, pbar, rtext = parts(bar)
        assert pbar.value == pbar.max == tracker.get(url).total_bytes
        assert pbar.bar_style == "success"
        assert "completed" in text(rtext)
    _, overall, _ = parts(tracker.overall)
    assert overall.value == overall.max == sum(200_000 + i for i in range(3))
    assert overall.bar_style == "success"
    for i in range(3):
        assert f"f{i}.bin" in tracker.table.value
    assert tracker.cancel_button.disabled


async def test_failed_bar_is_danger_and_table_names_error(
    server: LocalServer, dest: Path, tracker: NotebookTracker
) -> None:
    """A 404 turns its bar red and the table shows the file with 'HTTP 404 Not Found'."""
    good, bad = server.url("/data/ok.bin", size=5000), server.url("/data/gone.bin", fail="404")
    await nbdl.fetch([good, bad], dest=dest, tracker=tracker, retries=FAST_RETRY)
    _, pbar, rtext = parts(tracker.bars[bad])
    assert pbar.bar_style == "danger"
    assert "HTTP 404 Not Found" in text(rtext)
    assert parts(tracker.bars[good])[1].bar_style == "success"
    assert "gone.bin" in tracker.table.value
    assert "HTTP 404 Not Found" in tracker.table.value
    assert parts(tracker.overall)[1].bar_style == "danger"


async def test_cancelled_batch_shows_cancelled_and_keeps_part_files(
    server: LocalServer, dest: Path, tracker: NotebookTracker
) -> None:
    """Cancelling the fetch task leaves .part files, nothing final, bars saying 'cancelled'."""
    url = server.url("/data/slow.bin", size=2_000_000, rate=1_000_000)
    task = asyncio.create_task(nbdl.fetch([url], dest=dest, tracker=tracker))
    await until_in_progress(tracker, url)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (dest / "slow.bin.part").stat().st_size > 0
    assert not (dest / "slow.bin").exists()
    _, pbar, rtext = parts(tracker.bars[url])
    assert "cancelled" in text(rtext)
    assert pbar.bar_style == "warning"
    assert 0 < pbar.value < pbar.max
    assert "cancelled" in tracker.table.value


async def test_cancel_button_cancels_the_awaiting_task(
    server: LocalServer, dest: Path, tracker: NotebookTracker
) -> None:
    """Clicking Cancel cancels the task that runs fetch, and the button says so."""
    url = server.url("/data/slow.bin", size=2_000_000, rate=1_000_000)
    task = asyncio.create_task(nbdl.fetch([url], dest=dest, tracker=tracker))
    await until_in_progress(tracker, url)
    tracker.cancel_button.click()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tracker.get(url).status is nbdl.DownloadStatus.CANCELLED
    assert tracker.cancel_button.description == "Cancelled"


def test_patch_download_only_records(tracker: NotebookTracker) -> None:
    """Per-chunk patches change no widget until the refresh; one refresh shows the latest."""
    url = "http://example.org/a.bin"
    tracker.register_download(info(url))
    tracker.start()
    tracker.refresh()
    _, pbar, _ = parts(tracker.bars[url])
    tracker.patch_download(
        url, nbdl.PatchDownloadInfo(status=nbdl.DownloadStatus.IN_PROGRESS, started_at=1.0)
    )
    for done in range(1, 501):
        tracker.patch_download(url, nbdl.PatchDownloadInfo(bytes_downloaded=done))
    assert pbar.value == 0
    assert tracker.refresh() > 0
    assert pbar.value == 500
    assert tracker.refresh() == 0, "nothing changed: nothing is sent"


def test_large_batch_keeps_few_bars_and_a_short_table() -> None:
    """With 2000 files only max_bars bars exist, and the table lists max_table_rows rows."""
    tracker = NotebookTracker(refresh_interval=60, max_bars=5, max_table_rows=20)
    urls = [f"http://example.org/f{i:04}.bin" for i in range(2000)]
    for url in urls:
        tracker.register_download(info(url))
    tracker.start()
    tracker.refresh()
    assert len(tracker.bars) == 0, "nothing active yet"
    for n, url in enumerate(urls[:1500]):
        status = nbdl.DownloadStatus.FAILED if n == 3 else nbdl.DownloadStatus.COMPLETED
        tracker.patch_download(url, nbdl.PatchDownloadInfo(status=status, bytes_downloaded=1000))
    active = urls[1500:1503]
    for url in active:
        tracker.patch_download(url, nbdl.PatchDownloadInfo(status=nbdl.DownloadStatus.IN_PROGRESS))
    tracker.refresh()
    assert len(tracker.bars) == len(tracker.files_box.children) == 5
    assert set(active) <= set(tracker.bars)
    assert urls[3] in tracker.bars, "failures keep their bar before older successes"
    assert tracker.table.value.count("<tr") == 1 + 20 + 1  # header, rows, "more"
    assert "1980 more" in tracker.table.value
    tracker.show_all_button.value = True
    assert tracker.table.value.count("<tr") == 1 + 2000
    assert "1499/2000 files completed · 3 active · 1 failed" in text(parts(tracker.overall)[2])


async def test_refresh_timer_runs_at_a_few_hertz(server: LocalServer, dest: Path) -> None:
    """One timer redraws at about 1/refresh_interval, not per chunk, in < 5% of the time."""
    tracker = NotebookTracker(refresh_interval=0.25)
    tracker.budget = MessageBudget(rate=10_000)  # the interval alone decides here
    calls = 0
    drawing = 0.0
    original = tracker.refresh

    def counting() -> int:
        nonlocal calls, drawing
        calls += 1
        began = time.perf_counter()
        try:
            return original()
        finally:
            drawing += time.perf_counter() - began

    tracker.refresh = counting  # type: ignore[method-assign]
    urls = [server.url(f"/data/r{i}.bin", size=1_500_000, rate=1_000_000) for i in range(3)]
    started = asyncio.get_running_loop().time()
    await nbdl.fetch(urls, dest=dest, tracker=tracker, max_workers=3)
    elapsed = asyncio.get_running_loop().time() - started
    assert elapsed > 1
    # start() + close() draw once each; the timer about 4 times a second.
    assert calls <= elapsed / 0.25 + 4
    assert calls >= 3
    assert drawing < 0.05 * elapsed


def test_message_budget_slows_the_timer_for_bursts() -> None:
    """A refresh that sent many widget messages makes the timer wait longer than its interval."""
    tracker = NotebookTracker(refresh_interval=0.25)
    tracker.budget = MessageBudget(rate=50)
    sleeps: list[float] = []

    async def scenario() -> None:
        original_sleep = asyncio.sleep

        async def fake_sleep(delay: float) -> None:
            sleeps.append(delay)
            raise asyncio.CancelledError

        tracker.refresh = lambda: 200  # type: ignore[method-assign]
        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            with pytest.raises(asyncio.CancelledError):
                await tracker._run_timer()
        finally:
            asyncio.sleep = original_sleep

    asyncio.run(scenario())
    assert sleeps[0] == pytest.approx(200 / 50, abs=0.05)


def test_budget_is_shared_and_drains_at_its_rate() -> None:
    """Messages of several displays add up in one budget, which drains at `rate` per second."""
    budget = MessageBudget(rate=100)
    assert budget.spend(50) == pytest.approx(0.5, abs=0.05)
    assert budget.spend(50) == pytest.approx(1.0, abs=0.05), "a second display waits longer"
    assert NotebookTracker().budget is TextNotebookTracker().budget


def test_text_fallback_without_ipywidgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ipywidgets the notebook tracker is text, built without 'IProgress not found'."""
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    tracker = make_notebook_tracker()
    assert isinstance(tracker, TextNotebookTracker)
    url = "http://example.org/data.csv"
    tracker.register_download(info(url))
    tracker.patch_download(
        url,
        nbdl.PatchDownloadInfo(status=nbdl.DownloadStatus.FAILED, error="HTTP 404 Not Found"),
    )
    assert tracker.refresh() == 1
    assert "data.csv" in tracker.text
    assert "HTTP 404 Not Found" in tracker.text
    assert "0/1 files completed · 1 failed" in tracker.text


def test_auto_outside_a_kernel_is_not_the_notebook_tracker() -> None:
    """tracker='auto' in a plain process picks no notebook display; 'notebook' forces one."""
    assert not isinstance(resolve_tracker("auto"), NotebookTracker | TextNotebookTracker)
    assert isinstance(resolve_tracker("notebook"), NotebookTracker)


def test_import_nbdl_loads_no_widget_library() -> None:
    """`import nbdl` (and a script fetch) never imports ipywidgets or tqdm.notebook."""
    code = textwrap.dedent(
        """
        import sys
        import nbdl
        nbdl.fetch_sync([], dest="unused-dir", tracker="auto")
        loaded = [m for m in ("ipywidgets", "tqdm.notebook", "nbdl._notebook") if m in sys.modules]
        print(loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
