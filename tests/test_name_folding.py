"""Names that macOS and Windows take for one file (case, accents) are one file in every batch."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

import nbdl
from nbdl import _busy
from nbdl._locks import FolderLocks
from nbdl._naming import fold_name
from nbdl.testing import LocalServer, content_for

CAFE = "caf\u00e9.csv"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Data.csv", "data.csv"),
        ("README", "readme"),
        ("Stra\u00dfe.txt", "STRASSE.TXT"),  # more than macOS joins: the safe side
        (
            unicodedata.normalize("NFC", CAFE),
            unicodedata.normalize("NFD", CAFE),
        ),
    ],
)
def test_fold_name_joins_what_macos_and_windows_join(one: str, other: str) -> None:
    """Names differing only in case or in how an accent is composed fold to one key."""
    assert one != other
    assert fold_name(one) == fold_name(other)


def test_fold_name_keeps_different_names_apart() -> None:
    """Folding never joins names that differ in more than case and composition."""
    assert fold_name("data1.csv") != fold_name("data2.csv")
    assert fold_name(CAFE) != fold_name("cafe.csv")


async def test_names_differing_in_case_are_refused_before_any_request(
    server: LocalServer, dest: Path
) -> None:
    """Two URLs saved as Data.csv and data.csv are refused up front, naming both."""
    urls = [server.url("/data/Data.csv"), server.url("/data/data.csv")]
    with pytest.raises(nbdl.InvalidConfigError, match="one file on macOS and Windows") as caught:
        await nbdl.fetch(urls, dest, tracker="none")
    assert "'data.csv' and 'Data.csv'" in str(caught.value)
    assert server.requests == []
    assert not dest.exists() or list(dest.iterdir()) == []


async def test_accented_names_differing_in_case_are_refused(
    server: LocalServer, dest: Path
) -> None:
    """Café.csv and CAFÉ.csv are one file on macOS and Windows: refused up front."""
    urls = [server.url("/data/Caf%C3%A9.csv"), server.url("/data/CAF%C3%89.csv")]
    with pytest.raises(nbdl.InvalidConfigError, match="one file on macOS and Windows"):
        await nbdl.fetch(urls, dest, tracker="none")
    assert server.requests == []


async def test_names_differing_in_accent_composition_are_refused(
    server: LocalServer, dest: Path
) -> None:
    """A composed and a decomposed é in two URLs name one file: refused up front."""
    composed = server.url("/data/caf%C3%A9.csv")
    decomposed = server.url("/data/cafe%CC%81.csv")
    with pytest.raises(nbdl.InvalidConfigError, match=r"both be saved|one file on macOS"):
        await nbdl.fetch([composed, decomposed], dest, tracker="none")
    assert server.requests == []


async def test_a_filename_config_settles_a_case_clash(server: LocalServer, dest: Path) -> None:
    """The error's advice works: a FileConfig(filename=...) for one of them downloads both."""
    urls = [
        server.url("/data/Data.csv", size=100),
        nbdl.FileConfig(server.url("/data/data.csv", size=200), filename="data-2.csv"),
    ]
    results = await nbdl.fetch(urls, dest, tracker="none")
    assert results.ok
    assert (dest / "Data.csv").read_bytes() == content_for("Data.csv", 100)
    assert (dest / "data-2.csv").read_bytes() == content_for("data.csv", 200)


async def test_a_server_name_clashing_in_case_fails_that_download_only(
    server: LocalServer, dest: Path
) -> None:
    """A server's name equal to another's but for case fails with kind file; the other is kept."""
    urls = [
        server.url("/data/one", cd='attachment; filename="Report.pdf"'),
        server.url("/data/two", cd='attachment; filename="report.PDF"'),
    ]
    results = await nbdl.fetch(urls, dest, max_workers=1, tracker="none")
    assert results[0].path == dest / "Report.pdf"
    assert results[1].status is nbdl.DownloadStatus.FAILED
    assert results[1].error_kind is nbdl.ErrorKind.FILE
    assert "differs only in case" in (results[1].error or "")
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == ["Report.pdf"]
    assert (dest / "Report.pdf").read_bytes() == content_for("one", 1024)


def test_two_batches_of_one_process_share_a_name_whatever_its_case(tmp_path: Path) -> None:
    """A batch writing A.bin keeps another batch of this process off a.bin."""
    first, second = object(), object()
    try:
        assert _busy.add(first, tmp_path / "A.bin")
        assert not _busy.add(second, tmp_path / "a.bin")
        assert _busy.add(second, tmp_path / "b.bin")
    finally:
        _busy.release(first)
        _busy.release(second)


def test_a_batch_refused_for_a_case_variant_is_told_its_own_name(tmp_path: Path) -> None:
    """The conflict error names the file as the refused batch spelled it, not its folded key."""
    first, second = object(), object()
    try:
        _busy.reserve(first, tmp_path, ["Data.CSV"])
        with pytest.raises(nbdl.BatchConflictError, match=r"Data\.csv is being downloaded"):
            _busy.reserve(second, tmp_path, ["Data.csv"])
    finally:
        _busy.release(first)
        _busy.release(second)


def test_processes_lock_one_byte_for_names_that_fold_alike() -> None:
    """Names that fold alike take one lock byte, so two processes cannot write them at once."""
    assert FolderLocks._offset("Data.csv") == FolderLocks._offset("data.CSV")
    assert FolderLocks._offset("Data.csv") != FolderLocks._offset("Data2.csv")
