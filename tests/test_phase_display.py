"""What the displays say about phases beyond the transfer: waiting, processing, mirrors, output."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

import nbdl
from nbdl import DownloadInfo, DownloadStatus, LogTracker, PatchDownloadInfo, RichTracker
from nbdl._notebook import CellTracker, MessageBudget, NotebookTracker

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
URL = "http://127.0.0.1/data/images.tar.gz"


def _info() -> DownloadInfo:
    return DownloadInfo(url=URL, path=Path("/d/images.tar.gz"), total_bytes=1000)


def _drive(tracker: nbdl.Tracker, *patches: PatchDownloadInfo) -> None:
    tracker.register_download(_info())
    tracker.start()
    for patch in patches:
        tracker.patch_download(URL, patch)


EXTRACTING = (
    PatchDownloadInfo(status=DownloadStatus.IN_PROGRESS, started_at=1.0, bytes_downloaded=1000),
    PatchDownloadInfo(status=DownloadStatus.PROCESSING, note="extracting 40 %"),
)
DONE = PatchDownloadInfo(
    status=DownloadStatus.COMPLETED,
    finished_at=2.0,
    output=Path("/d/images"),
    served_by="http://mirror.example/images.tar.gz",
)


def _frame(tracker: RichTracker) -> str:
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, width=200).print(tracker)
    return ANSI.sub("", buffer.getvalue())


@pytest.mark.parametrize(
    ("patch", "shown"),
    [
        (EXTRACTING[1], "(extracting 40 %)"),
        (
            PatchDownloadInfo(status=DownloadStatus.PENDING, note="waiting for another process"),
            "(waiting for",
        ),
    ],
)
def test_rich_row_shows_the_phase(patch: PatchDownloadInfo, shown: str) -> None:
    """A terminal row says what its file waits for or which processing phase it is in."""
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    tracker = RichTracker(console=console, row_delay=0)
    _drive(tracker, EXTRACTING[0], patch)
    tracker.refresh()
    assert shown in _frame(tracker)
    tracker.close()


def test_log_line_names_the_mirror_and_the_extracted_folder() -> None:
    """The plain log line of a completed file says which mirror served it and where it went."""
    out = io.StringIO()
    tracker = LogTracker(file=out)
    _drive(tracker, *EXTRACTING, DONE)
    tracker.close()
    line = next(line for line in out.getvalue().splitlines() if "done" in line)
    assert "from mirror http://mirror.example/images.tar.gz" in line
    assert "extracted to images" in line


@pytest.fixture(autouse=True)
def _fresh_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CellTracker, "budget", MessageBudget())


def test_notebook_bar_and_table_show_extraction_then_the_output() -> None:
    """The notebook bar and table say 'extracting 40 %', then the folder it went to."""
    tracker = NotebookTracker(refresh_interval=60)
    _drive(tracker, *EXTRACTING)
    tracker.refresh()
    rtext = tracker.bars[URL].container.children[2]
    assert "extracting 40 %" in str(rtext.value).replace("\u2007", " ")
    assert "extracting 40 %" in tracker.table.value
    tracker.patch_download(URL, DONE)
    tracker.refresh()
    assert "completed (from a mirror) → images" in tracker.table.value
    tracker.close()
