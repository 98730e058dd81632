"""``Results._repr_html_``: what a cell ending in ``results`` shows."""

from __future__ import annotations

from pathlib import Path

import nbdl


def make(n: int, failed: set[int]) -> nbdl.Results:
    infos = []
    for i in range(n):
        status = nbdl.DownloadStatus.FAILED if i in failed else nbdl.DownloadStatus.COMPLETED
        error = "HTTP 404 Not Found" if i in failed else None
        infos.append(
            nbdl.DownloadInfo(
                url=f"http://example.org/f{i}.bin", path=Path(f"f{i}.bin"), status=status,
                error=error,
            )
        )  # fmt: skip
    return nbdl.Results(infos)


def test_failures_are_red_rows_with_their_error() -> None:
    """A failed file is a red row naming the file and its error."""
    page = make(3, {1})._repr_html_()
    assert page.count("<tr") == 1 + 3
    assert '<tr style="background:#fde2e1"><td>f1.bin</td>' in page
    assert "HTTP 404 Not Found" in page
    assert "3 files: 2 completed, 1 failed" in page


def test_thousands_of_results_show_failures_and_a_bounded_table() -> None:
    """With 5000 results the table has 200 rows, every failure among them, and a 'more' line."""
    page = make(5000, {4321, 4999})._repr_html_()
    assert page.count("<tr") == 1 + 200 + 1
    assert "f4321.bin" in page
    assert "f4999.bin" in page
    assert "and 4800 more" in page
