"""The notebook tracker, driven in-process: widget properties are inspected directly."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
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
    tracker = NotebookTracker(refresh_interval=60, max_bars=5, max_table_rows=20, bar_delay=0)
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


FAILED, PENDING = nbdl.DownloadStatus.FAILED, nbdl.DownloadStatus.PENDING
ACTIVE = {
    nbdl.DownloadStatus.PENDING,
    nbdl.DownloadStatus.IN_PROGRESS,
    nbdl.DownloadStatus.PROCESSING,
}


def table_files(tracker: NotebookTracker) -> list[str]:
    """The file names of the table's rows, top to bottom (the "... more" row excluded)."""
    return re.findall(r"<tr[^>]*><td>([^<]*)</td>", tracker.table.value)


def table_statuses(tracker: NotebookTracker) -> list[tuple[str, str]]:
    """(file name, status) of the table's rows, top to bottom."""
    return re.findall(
        r"<tr[^>]*><td>([^<]*)</td><td>[^<]*</td><td>([^<]*)</td>", tracker.table.value
    )


def many(tracker: CellTracker, count: int) -> list[str]:
    """Register ``count`` files f0000.bin, f0001.bin, ...; returns their URLs."""
    urls = [f"http://example.org/f{n:04}.bin" for n in range(count)]
    for url in urls:
        tracker.register_download(info(url))
    return urls


def pending(url: str) -> nbdl.DownloadInfo:
    """A new record for ``url`` that is already active (a plain new record is queued)."""
    return dataclasses.replace(info(url), status=PENDING)


def set_status(tracker: CellTracker, url: str, status: nbdl.DownloadStatus) -> None:
    tracker.patch_download(url, nbdl.PatchDownloadInfo(status=status, error="boom"))


def names(numbers: list[int]) -> list[str]:
    return [f"f{n:04}.bin" for n in numbers]


def test_table_picks_first_failures_first_active_then_newest_in_registration_order() -> None:
    """Table rows: the first-registered failures (half the rows), active files, newest finished."""
    tracker = NotebookTracker(refresh_interval=60, max_bars=2, max_table_rows=12)
    urls = many(tracker, 40)
    tracker.start()
    tracker.refresh()
    failures = [30, 4, 25, 11, 38, 17, 8]  # failing out of registration order
    for n in failures:
        set_status(tracker, urls[n], FAILED)
    active = [33, 35, 37, 39]
    for n, url in enumerate(urls):
        if n in active:
            set_status(tracker, url, PENDING)
        elif n not in failures:
            set_status(tracker, url, nbdl.DownloadStatus.COMPLETED)
    tracker.refresh()
    tracker.register_download(pending(urls[1]))  # finished, then registered again: active
    tracker.refresh()
    # Six failures of seven (38 is left out), every active file, and the newest finished (36).
    assert table_files(tracker) == names([1, 4, 8, 11, 17, 25, 30, 33, 35, 36, 37, 39])
    assert "28 more" in tracker.table.value
    # More active files than room: the first registered win, not the first to become active.
    tracker.register_download(pending(urls[0]))
    set_status(tracker, urls[2], nbdl.DownloadStatus.IN_PROGRESS)
    tracker.refresh()
    assert table_files(tracker) == names([0, 1, 2, 4, 8, 11, 17, 25, 30, 33, 35, 37])


def test_a_failure_retried_or_registered_again_leaves_the_failure_rows() -> None:
    """A file that leaves FAILED (retried, or registered again) gives its failure row up."""
    tracker = NotebookTracker(refresh_interval=60, max_bars=2, max_table_rows=4)
    urls = many(tracker, 20)
    for url in urls[:5]:
        set_status(tracker, url, FAILED)
    for url in urls[10:12]:
        set_status(tracker, url, PENDING)
    tracker.start()
    tracker.refresh()
    assert table_statuses(tracker) == list(
        zip(names([0, 1, 10, 11]), ["failed", "failed", "pending", "pending"], strict=True)
    )
    tracker.register_download(info(urls[0]))  # queued again: in no group the table lists
    set_status(tracker, urls[1], nbdl.DownloadStatus.IN_PROGRESS)  # a retry
    tracker.refresh()
    # The next failures take the two failure rows; 1 is active now, and registered before 10.
    assert table_statuses(tracker) == list(
        zip(names([1, 2, 3, 10]), ["in progress", "failed", "failed", "pending"], strict=True)
    )
    assert "3 failed" in text(parts(tracker.overall)[2])


def reference_rows(tracker: NotebookTracker) -> tuple[list[str], int]:
    """The table's rows and hidden count as the full scan of every record found them.

    The scan this replaced, kept as the oracle; its one change: a file that finished twice
    (registered again) is one row, where the scan listed it twice.
    """
    rows, limit = tracker.downloads(), tracker.max_table_rows
    failed = [i.url for i in rows if i.status is FAILED][: limit // 2]
    active = [i.url for i in rows if i.status in ACTIVE][: limit - len(failed)]
    chosen = set(failed + active)
    newest = [u for u in dict.fromkeys(reversed(tracker._recent)) if u not in chosen]
    picked = chosen | set(newest[: limit - len(chosen)])
    return [i.filename for i in rows if i.url in picked], len(rows) - len(picked)


def test_table_rows_match_a_full_scan_through_random_changes() -> None:
    """Through random status changes and re-registrations, the table picks what a scan would."""
    tracker = NotebookTracker(refresh_interval=60, max_bars=3, max_table_rows=11)
    urls = many(tracker, 300)
    tracker.start()
    tracker.refresh()
    rng = random.Random(7)
    statuses = list(nbdl.DownloadStatus)
    for step in range(3000):
        url = rng.choice(urls)
        if rng.random() < 0.05:
            tracker.register_download(info(url))
        else:
            set_status(tracker, url, rng.choice(statuses))
        if step % 25 == 0:
            tracker.refresh()
            expected, hidden = reference_rows(tracker)
            assert table_files(tracker) == expected, f"step {step}"
            assert f"... {hidden} more" in tracker.table.value


def test_text_tracker_lists_first_active_and_failed_files() -> None:
    """The text display lists the first registered active or failed files, then counts the rest."""
    tracker = TextNotebookTracker(refresh_interval=60, max_lines=3)
    urls = many(tracker, 10)
    for n in (0, 2, 3, 4, 6, 7):
        set_status(tracker, urls[n], nbdl.DownloadStatus.COMPLETED)
    for n, status in ((9, FAILED), (5, FAILED), (8, PENDING), (1, PENDING)):
        set_status(tracker, urls[n], status)
    tracker.refresh()
    assert re.findall(r"f\d+\.bin", tracker.text) == names([1, 5, 8])
    assert tracker.text.endswith("\n  ... and 1 more")
    set_status(tracker, urls[1], nbdl.DownloadStatus.COMPLETED)
    tracker.register_download(info(urls[5]))  # queued again: no longer listed as a failure
    tracker.refresh()
    assert re.findall(r"f\d+\.bin", tracker.text) == names([8, 9])
    assert "more" not in tracker.text
    assert "1 active · 1 failed" in tracker.text


class CountingDict(dict[str, Any]):
    """A dict that counts the items read out of it by iteration."""

    read = 0

    def _counted(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self.read += 1
            yield item

    def __iter__(self) -> Iterator[str]:
        return self._counted(super().__iter__())

    def keys(self) -> Any:
        return self._counted(iter(super().keys()))

    def values(self) -> Any:
        return self._counted(iter(super().values()))

    def items(self) -> Any:
        return self._counted(iter(super().items()))


def test_refresh_work_follows_the_changes_not_the_batch_size() -> None:
    """With 50,000 files, a refresh after 3 changes neither scans the records nor loops over all."""
    # No bar delay: every file is a bar candidate at once.
    tracker = NotebookTracker(refresh_interval=60, bar_delay=0)
    urls = [f"http://example.org/f{n:05}.bin" for n in range(50_000)]
    for url in urls:
        tracker.register_download(pending(url))  # every file active: the bars' candidates
    tracker.start()
    tracker.refresh()
    stores = {
        "records": CountingDict(tracker._downloads),
        "totals": CountingDict(tracker._totals.last),
        "active": CountingDict(tracker._active_since),
    }
    tracker._downloads, tracker._totals.last, tracker._active_since = stores.values()
    for n, status in ((1000, FAILED), (21000, nbdl.DownloadStatus.COMPLETED), (41000, FAILED)):
        set_status(tracker, urls[n], status)
    lines = 0

    def count_nbdl_lines(frame: FrameType, event: str, _arg: object) -> Any:
        # Python-level loops anywhere in nbdl (widget libraries are not ours to count).
        nonlocal lines
        if not str(frame.f_globals.get("__name__", "")).startswith("nbdl"):
            return None
        lines += event == "line"
        return count_nbdl_lines

    previous = sys.gettrace()
    sys.settrace(count_nbdl_lines)
    try:
        tracker.refresh()
    finally:
        sys.settrace(previous)
    assert {name: store.read for name, store in stores.items()} == {
        "records": 0,
        "totals": 0,
        "active": tracker.max_bars,
    }
    # A scan of every file would run >= 50,000 lines; a 50-row table needs a few hundred.
    assert lines < 5_000
    shown = table_files(tracker)
    assert len(shown) == tracker.max_table_rows
    assert {"f01000.bin", "f41000.bin"} <= set(shown)
    assert "2 failed" in text(parts(tracker.overall)[2])


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def delayed(max_bars: int = 2, files: int = 20) -> tuple[NotebookTracker, Clock, list[str]]:
    """A started tracker with ``bar_delay=0.5`` on a hand-driven clock, and its files' URLs."""
    clock = Clock()
    tracker = NotebookTracker(refresh_interval=60, max_bars=max_bars, bar_delay=0.5, clock=clock)
    urls = many(tracker, files)
    tracker.start()
    tracker.refresh()
    return tracker, clock, urls


def test_bar_delay_must_not_be_negative() -> None:
    """A negative (or NaN) bar_delay is refused with a ValueError naming it."""
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="bar_delay must be >= 0"):
            NotebookTracker(bar_delay=bad)


def test_large_batch_file_gets_a_bar_once_active_for_bar_delay() -> None:
    """A file active less than bar_delay has no bar; from bar_delay on it has one, unprompted."""
    tracker, clock, urls = delayed()
    set_status(tracker, urls[0], PENDING)
    tracker.refresh()  # first seen active now
    clock.now += 0.3
    set_status(tracker, urls[0], nbdl.DownloadStatus.IN_PROGRESS)
    tracker.refresh()
    assert tracker.bars == {}
    clock.now += 0.2
    assert tracker.refresh() > 0, "no new change, but the bar is due: the refresh draws it"
    assert list(tracker.bars) == [urls[0]]
    assert tracker.files_box.children == (tracker.bars[urls[0]].container,)


def test_bar_delay_counts_from_the_download_start_not_the_first_refresh() -> None:
    """A file started before the refresh that first sees it is due by its started_at."""
    tracker, clock, urls = delayed()
    tracker.patch_download(
        urls[0],
        nbdl.PatchDownloadInfo(status=nbdl.DownloadStatus.IN_PROGRESS, started_at=clock.now - 0.6),
    )
    tracker.patch_download(
        urls[1],
        nbdl.PatchDownloadInfo(status=nbdl.DownloadStatus.IN_PROGRESS, started_at=clock.now - 0.1),
    )
    tracker.refresh()
    assert list(tracker.bars) == [urls[0]]


def test_large_batch_quick_success_never_gets_a_bar() -> None:
    """A file that finished before bar_delay gets no bar, neither later nor from close()."""
    tracker, clock, urls = delayed()
    for url in urls[:5]:
        set_status(tracker, url, PENDING)
    tracker.refresh()
    clock.now += 0.4
    for url in urls[:5]:
        set_status(tracker, url, nbdl.DownloadStatus.COMPLETED)
    tracker.refresh()
    clock.now += 1
    tracker.refresh()
    tracker.close()
    assert tracker.bars == {}
    assert tracker.files_box.children == ()
    assert table_files(tracker)[:5] == names([0, 1, 2, 3, 4]), "the table lists them"


def test_large_batch_quick_failure_gets_a_red_bar() -> None:
    """A file that fails before bar_delay still gets a bar, red, which close() keeps."""
    tracker, clock, urls = delayed()
    set_status(tracker, urls[3], PENDING)
    tracker.refresh()
    clock.now += 0.1
    set_status(tracker, urls[3], FAILED)
    tracker.refresh()
    assert list(tracker.bars) == [urls[3]]
    tracker.close()
    _, pbar, rtext = parts(tracker.bars[urls[3]])
    assert pbar.bar_style == "danger"
    assert "failed: boom" in text(rtext)


def test_finished_bar_stays_until_a_due_file_needs_its_slot() -> None:
    """A bar whose file finished stays green through quick successes and close(), until needed."""
    tracker, clock, urls = delayed(max_bars=1)
    set_status(tracker, urls[0], PENDING)
    tracker.refresh()
    clock.now += 0.5
    tracker.refresh()
    set_status(tracker, urls[0], nbdl.DownloadStatus.COMPLETED)
    for url in urls[1:10]:  # quick successes: no bar, and they do not push the finished one out
        set_status(tracker, url, PENDING)
        set_status(tracker, url, nbdl.DownloadStatus.COMPLETED)
    set_status(tracker, urls[10], PENDING)
    tracker.refresh()
    assert list(tracker.bars) == [urls[0]]
    assert parts(tracker.bars[urls[0]])[1].bar_style == "success"
    clock.now += 0.5
    tracker.refresh()
    assert list(tracker.bars) == [urls[10]], "an active file due for a bar takes the slot"
    set_status(tracker, urls[10], nbdl.DownloadStatus.COMPLETED)
    tracker.close()
    assert list(tracker.bars) == [urls[10]]
    assert parts(tracker.bars[urls[10]])[1].bar_style == "success"


def test_small_batch_has_a_bar_per_file_from_the_start_despite_bar_delay() -> None:
    """With at most max_bars files every file has a bar at start(), quick ones included."""
    tracker, clock, urls = delayed(max_bars=3, files=3)
    assert list(tracker.bars) == urls
    set_status(tracker, urls[1], PENDING)
    tracker.refresh()
    clock.now += 0.1
    set_status(tracker, urls[1], nbdl.DownloadStatus.COMPLETED)
    tracker.close()
    assert list(tracker.bars) == urls
    assert parts(tracker.bars[urls[1]])[1].bar_style == "success"


def test_active_failure_takes_one_slot_not_two() -> None:
    """A retried failure is both active and a recent failure: it takes one bar, not two slots."""
    tracker = NotebookTracker(refresh_interval=60, max_bars=2, bar_delay=0)
    urls = many(tracker, 10)
    tracker.start()
    set_status(tracker, urls[1], nbdl.DownloadStatus.IN_PROGRESS)
    set_status(tracker, urls[2], nbdl.DownloadStatus.IN_PROGRESS)
    set_status(tracker, urls[0], FAILED)
    tracker.refresh()
    assert set(tracker.bars) == {urls[1], urls[2]}
    set_status(tracker, urls[1], nbdl.DownloadStatus.COMPLETED)
    set_status(tracker, urls[2], nbdl.DownloadStatus.COMPLETED)
    tracker.register_download(pending(urls[0]))
    tracker.refresh()
    assert set(tracker.bars) == {urls[0], urls[2]}
    assert len(tracker.files_box.children) == 2
