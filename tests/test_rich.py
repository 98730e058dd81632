from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path

import pytest
from rich.console import Console

import nbdl
from nbdl import DownloadInfo, DownloadStatus, LogTracker, PatchDownloadInfo, RichTracker
from nbdl._select import terminal_tracker
from nbdl.testing import LocalServer

MiB = 1024 * 1024
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    """A hand-driven clock, so speeds and ETAs are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=100), buffer


def text(buffer: io.StringIO) -> str:
    return ANSI.sub("", buffer.getvalue())


def frame(tracker: RichTracker) -> str:
    """The live rows as they are now, rendered on their own."""
    console, buffer = terminal()
    console.print(tracker)
    return text(buffer)


def register(tracker: nbdl.DownloadTracker, count: int) -> list[str]:
    urls = [f"http://127.0.0.1/data/file-{n}.bin" for n in range(count)]
    for url in urls:
        tracker.register_download(DownloadInfo(url=url, path=Path("/d") / url.rsplit("/", 1)[1]))
    return urls


def test_the_store_marks_changes_only_for_displays_that_ask() -> None:
    """A display's store lists changed URLs once each, in order; a plain store keeps no list."""
    plain = nbdl.DownloadTracker()
    register(plain, 3)
    assert plain._changed is None
    assert plain._take_changed() == {}
    display = RichTracker(console=terminal()[0])
    urls = register(display, 3)
    display.patch_download(urls[2], PatchDownloadInfo(bytes_downloaded=5))
    display.patch_download(urls[0], PatchDownloadInfo(bytes_downloaded=7))
    assert list(display._take_changed()) == urls
    display.patch_download(urls[1], PatchDownloadInfo(bytes_downloaded=1))
    assert list(display._take_changed()) == [urls[1]]
    assert display._take_changed() == {}


def test_rows_show_active_files_with_bytes_speed_and_eta() -> None:
    """An active file gets a row with its name, bytes, speed and time left."""
    console, _ = terminal()
    clock = Clock()
    tracker = RichTracker(console=console, clock=clock, row_delay=0)
    a, _ = register(tracker, 2)
    tracker.start()
    tracker.patch_download(
        a, PatchDownloadInfo(status=DownloadStatus.IN_PROGRESS, total_bytes=4 * MiB)
    )
    tracker.refresh()
    for done in (1, 2):
        clock.now += 1
        tracker.patch_download(a, PatchDownloadInfo(bytes_downloaded=done * MiB))
        tracker.refresh()
    rows = frame(tracker)
    assert "file-0.bin" in rows
    assert "2.0 MiB/4.0 MiB" in rows
    assert "1.0 MiB/s" in rows
    assert "0:00:02" in rows  # 2 MiB left at 1 MiB/s
    assert "file-1.bin" not in rows  # still queued: no row
    assert "Total 0/2 files" in rows
    tracker.close()


def test_long_names_are_cut_and_rows_keep_their_columns() -> None:
    """A long name is cut with an ellipsis; sizes and times stay in their columns, in width."""
    console, _ = terminal()
    clock = Clock()
    tracker = RichTracker(console=console, clock=clock)
    long_name = "a-very-long-file-name-" * 4 + ".tar.gz"
    url = "http://127.0.0.1/data/" + long_name
    tracker.register_download(DownloadInfo(url=url, path=Path("/d") / long_name))
    tracker.start()
    tracker.patch_download(
        url, PatchDownloadInfo(status=DownloadStatus.IN_PROGRESS, total_bytes=4 * MiB)
    )
    tracker.refresh()
    clock.now += 1
    tracker.patch_download(url, PatchDownloadInfo(bytes_downloaded=MiB))
    tracker.refresh()
    lines = frame(tracker).splitlines()
    row = next(line for line in lines if line.startswith("a-very-long"))
    assert "…" in row
    assert long_name not in row
    assert len(row) <= 100
    assert row.index("1.0 MiB/4.0 MiB") > row.index("…") + 5  # a bar lies between
    total = next(line for line in lines if line.startswith("Total"))
    # The sizes of the file row and the total row end in the same column.
    assert row.index("4.0 MiB") + len("4.0 MiB") == total.index("4.0 MiB") + len("4.0 MiB")
    tracker.close()


def test_a_file_gets_its_row_after_row_delay_and_quick_files_never_do() -> None:
    """Rows appear for files active row_delay seconds; files done sooner are only counted."""
    console, _ = terminal()
    clock = Clock()
    tracker = RichTracker(console=console, clock=clock, row_delay=0.5)
    slow, quick = register(tracker, 2)
    tracker.start()
    for url in (slow, quick):
        tracker.patch_download(url, PatchDownloadInfo(status=DownloadStatus.IN_PROGRESS))
    tracker.refresh()
    rows = frame(tracker)
    assert "file-0.bin" not in rows
    assert "… and 2 active files without a row" in rows
    clock.now += 0.25
    tracker.patch_download(quick, PatchDownloadInfo(status=DownloadStatus.COMPLETED))
    tracker.refresh()
    rows = frame(tracker)
    assert "file-0.bin" not in rows  # 0.25 s active: not yet
    assert "… and 1 active file without a row" in rows
    clock.now += 0.25
    tracker.refresh()
    rows = frame(tracker)
    assert "file-0.bin" in rows
    assert "file-1.bin" not in rows
    assert "without a row" not in rows
    assert "Total 1/2 files" in rows
    tracker.close()


def test_finished_rows_are_removed_and_counted() -> None:
    """A completed file leaves the live rows and is counted in the overall row."""
    console, _ = terminal()
    tracker = RichTracker(console=console, clock=Clock(), row_delay=0)
    a, b = register(tracker, 2)
    tracker.start()
    for url in (a, b):
        tracker.patch_download(url, PatchDownloadInfo(status=DownloadStatus.IN_PROGRESS))
    tracker.refresh()
    assert "file-0.bin" in frame(tracker)
    tracker.patch_download(
        a, PatchDownloadInfo(status=DownloadStatus.COMPLETED, bytes_downloaded=10, total_bytes=10)
    )
    tracker.refresh()
    rows = frame(tracker)
    assert "file-0.bin" not in rows
    assert "file-1.bin" in rows
    assert "Total 1/2 files" in rows
    tracker.close()


def test_failure_is_printed_with_its_error_as_it_happens() -> None:
    """A failure appears with its error at the next refresh, before the batch ends."""
    console, buffer = terminal()
    tracker = RichTracker(console=console, clock=Clock())
    (url,) = register(tracker, 1)
    tracker.start()
    tracker.patch_download(
        url, PatchDownloadInfo(status=DownloadStatus.FAILED, error="HTTP 404 Not Found")
    )
    tracker.refresh()
    assert "✗ file-0.bin: HTTP 404 Not Found" in text(buffer)
    assert "Total 1/1 files, 1 failed" in frame(tracker)
    tracker.close()


def test_summary_table_counts_outcomes_and_lists_failures() -> None:
    """Closing prints a summary with counts by outcome and every failure's error."""
    console, buffer = terminal()
    tracker = RichTracker(console=console, clock=Clock())
    a, b, c = register(tracker, 3)
    tracker.start()
    tracker.patch_download(
        a, PatchDownloadInfo(status=DownloadStatus.COMPLETED, bytes_downloaded=MiB)
    )
    tracker.patch_download(
        b,
        PatchDownloadInfo(status=DownloadStatus.FAILED, error="sha256 mismatch: expected 00…"),
    )
    tracker.patch_download(c, PatchDownloadInfo(status=DownloadStatus.CANCELLED))
    tracker.close()
    out = text(buffer)
    summary = out[out.index("nbdl: 1 of 3 files completed") :]
    assert re.search(r"downloaded\s*│\s*1\s*│\s*1.0 MiB", summary)
    assert re.search(r"failed\s*│\s*1", summary)
    assert re.search(r"cancelled\s*│\s*1", summary)
    assert "file-1.bin │ sha256 mismatch" in summary
    assert "partial files are kept" in summary


def test_ten_thousand_files_stay_cheap_and_fit_the_screen() -> None:
    """10,000 files: patches and refreshes stay fast, and at most max_rows rows are shown."""
    console, buffer = terminal()
    tracker = RichTracker(console=console, clock=Clock(), max_rows=8, row_delay=0)
    urls = register(tracker, 10_000)
    tracker.start()
    began = time.perf_counter()
    for url in urls[:50]:
        tracker.patch_download(
            url, PatchDownloadInfo(status=DownloadStatus.IN_PROGRESS, total_bytes=1000)
        )
    for step in range(1, 101):
        for url in urls[:50]:
            tracker.patch_download(url, PatchDownloadInfo(bytes_downloaded=step * 10))
        tracker.refresh()
    for url in urls[50:]:
        tracker.patch_download(url, PatchDownloadInfo(status=DownloadStatus.COMPLETED))
    tracker.refresh()
    took = time.perf_counter() - began
    rows = frame(tracker).splitlines()
    assert len(rows) == 1 + 8 + 1  # the overall row, max_rows file rows, the rest counted
    assert "Total 9950/10000 files" in rows[0]
    assert rows[-1] == "… and 42 more active files without a row"
    # 5,000 + 10,000 patches and 101 refreshes; generous for a slow CI box.
    assert took < 5, took
    tracker.close()
    assert len(text(buffer)) < 200_000


async def test_refresh_is_throttled_not_per_chunk() -> None:
    """On a running loop the display redraws on its timer, whatever the number of patches."""

    class Counting(RichTracker):
        calls = 0

        def refresh(self) -> None:
            self.calls += 1
            super().refresh()

    console, _ = terminal()
    tracker = Counting(console=console, refresh_per_second=4)
    (url,) = register(tracker, 1)
    tracker.start()
    tracker.patch_download(url, PatchDownloadInfo(status=DownloadStatus.IN_PROGRESS))
    for n in range(20_000):
        tracker.patch_download(url, PatchDownloadInfo(bytes_downloaded=n))
    assert tracker.calls == 0  # start() draws nothing: the first frame waits for a tick
    await asyncio.sleep(0.6)
    assert 1 <= tracker.calls <= 3  # ticks at 0.25 s and 0.5 s, one may be late
    tracker.close()
    calls = tracker.calls
    await asyncio.sleep(0.4)
    assert tracker.calls == calls  # the timer stops with close()


async def test_rich_tracker_in_a_real_fetch(server: LocalServer, dest: Path) -> None:
    """A real fetch with a RichTracker shows the failure and a summary of a real batch."""
    console, buffer = terminal()
    results = await nbdl.fetch(
        [server.url("/data/good.bin", size=300_000), server.url("/data/gone.bin", fail=404)],
        dest,
        tracker=RichTracker(console=console),
    )
    assert [i.status for i in results] == [DownloadStatus.COMPLETED, DownloadStatus.FAILED]
    out = text(buffer)
    assert "✗ gone.bin: HTTP 404 Not Found" in out
    assert "nbdl: 1 of 2 files completed" in out
    assert "gone.bin │ HTTP 404 Not Found" in out


def test_log_tracker_writes_one_plain_line_per_file_and_a_summary() -> None:
    """LogTracker: a line per completed or failed file, a summary, no control characters."""
    out = io.StringIO()
    clock = Clock()
    tracker = LogTracker(file=out, clock=clock)
    a, b, c = register(tracker, 3)
    tracker.start()
    tracker.patch_download(a, PatchDownloadInfo(status=DownloadStatus.IN_PROGRESS))
    for n in range(100):  # chunks write nothing
        tracker.patch_download(a, PatchDownloadInfo(bytes_downloaded=n))
    tracker.patch_download(
        a, PatchDownloadInfo(status=DownloadStatus.COMPLETED, bytes_downloaded=2 * MiB)
    )
    tracker.patch_download(
        b,
        PatchDownloadInfo(status=DownloadStatus.FAILED, error="HTTP 500 \x1b[31mboom\x1b[0m\r"),
    )
    tracker.patch_download(c, PatchDownloadInfo(status=DownloadStatus.CANCELLED))
    clock.now += 2
    tracker.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "nbdl: downloading 3 files"
    assert lines[1].startswith("[1/3] done    file-0.bin  2.0 MiB")
    assert lines[2].startswith("[2/3] FAILED  file-1.bin  HTTP 500")
    assert "boom" in lines[2]
    assert lines[3].startswith("nbdl: 3 files: 1 completed, 1 failed, 1 cancelled")
    assert lines[4].startswith("  failed: file-1.bin: HTTP 500")
    assert len(lines) == 5
    assert all(ch.isprintable() for line in lines for ch in line)


def test_terminal_tracker_picks_log_lines_when_stdout_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tracker='auto' outside a terminal gives LogTracker; 'rich' and 'log' are honoured."""
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert isinstance(terminal_tracker(None), LogTracker)
    assert isinstance(terminal_tracker("rich"), RichTracker)
    assert isinstance(terminal_tracker("log"), LogTracker)


def test_overall_total_is_estimated_from_finished_files() -> None:
    """Sizes not known yet are estimated (marked ~) from the files already finished."""
    console, _ = terminal()
    tracker = RichTracker(console=console, clock=Clock())
    a, b, c = register(tracker, 3)
    tracker.start()
    tracker.patch_download(
        a, PatchDownloadInfo(status=DownloadStatus.IN_PROGRESS, total_bytes=8 * MiB)
    )
    tracker.refresh()
    assert "0 B/~24.0 MiB" in frame(tracker)  # two unknown files guessed at 8 MiB each
    tracker.patch_download(
        b,
        PatchDownloadInfo(status=DownloadStatus.COMPLETED, bytes_downloaded=MiB, total_bytes=MiB),
    )
    tracker.refresh()
    assert "1.0 MiB/~10.0 MiB" in frame(tracker)  # the last one guessed like the finished one
    tracker.patch_download(c, PatchDownloadInfo(status=DownloadStatus.FAILED, error="x"))
    tracker.refresh()
    assert "1.0 MiB/9.0 MiB" in frame(tracker)  # every size known or given up: exact
    tracker.close()


def test_log_tracker_survives_a_closed_output() -> None:
    """A closed pipe stops the log lines, never the downloads reporting to the tracker."""
    out = io.StringIO()
    tracker = LogTracker(file=out)
    (url,) = register(tracker, 1)
    tracker.start()
    out.close()
    tracker.patch_download(url, PatchDownloadInfo(status=DownloadStatus.COMPLETED))
    tracker.close()
    assert tracker.get(url).status is DownloadStatus.COMPLETED


def test_terminal_tracker_picks_rich_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """tracker='auto' on a terminal gives the live Rich display."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdout", Tty())
    assert isinstance(terminal_tracker(None), RichTracker)


async def test_markup_in_a_name_or_a_server_error_is_shown_as_text(
    server: LocalServer, dest: Path
) -> None:
    """A name or an error holding Rich markup prints as typed; "[/x]" in an error cannot raise."""
    console, buffer = terminal()
    hostile = nbdl.FileConfig(server.url("/data/gone.bin", fail=404), filename="[red]a.bin")
    results = await nbdl.fetch([hostile], dest, tracker=RichTracker(console=console))
    assert results[0].status is DownloadStatus.FAILED
    tracker = RichTracker(console=console, clock=Clock())
    (url,) = register(tracker, 1)
    tracker.start()
    error = "HTTP 502 [/red][link=http://evil.example]click[/link]"
    tracker.patch_download(url, PatchDownloadInfo(status=DownloadStatus.FAILED, error=error))
    tracker.close()
    out = text(buffer)
    assert "[red]a.bin │ HTTP 404 Not Found" in out
    assert error in out
    assert "\x1b]8;" not in buffer.getvalue()  # no OSC 8 hyperlink was made
