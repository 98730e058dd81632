"""Data-set cells end to end: download, verify, extract once, and do nothing on a re-run."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

import nbdl
from nbdl.testing import LocalServer

from .conftest import leftovers


def _tar_gz(files: dict[str, bytes], *, level: int = 6) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=level) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


TABLES = {f"tables/part-{i}.csv": f"x,y\n{i},{i * i}\n".encode() for i in range(3)}


class _Phases(nbdl.DownloadTracker):
    """Every (status, note) a download went through; ``processing`` is set at that phase."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[nbdl.DownloadStatus, str | None]] = []
        self.processing = asyncio.Event()

    def patch_download(self, url: str, patch: nbdl.PatchDownloadInfo) -> None:
        super().patch_download(url, patch)
        info = self.get(url)
        self.seen.append((info.status, info.note))
        if info.status is nbdl.DownloadStatus.PROCESSING:
            self.processing.set()


async def test_archive_is_extracted_once_and_a_rerun_does_nothing(
    server: LocalServer, dest: Path
) -> None:
    """extract=True: the verified archive lands unpacked; a re-run makes no request, no work."""
    data = _tar_gz(TABLES)
    config = nbdl.FileConfig(
        server.add_file("tables.tar.gz", data), checksum=_sha256(data), extract=True
    )
    tracker = _Phases()
    results = await nbdl.fetch([config], dest, tracker=tracker)
    info = results[0]
    assert info.status is nbdl.DownloadStatus.COMPLETED, info.error
    assert info.output == dest / "tables"
    assert results.outputs == [dest / "tables"]
    for name, content in TABLES.items():
        assert (dest / "tables" / name).read_bytes() == content
    assert any(status is nbdl.DownloadStatus.PROCESSING for status, _ in tracker.seen)
    assert any(note and note.startswith("extracting") for _, note in tracker.seen)
    marker_files = sorted((dest / ".nbdl" / "extracted").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in (*marker_files, dest / "tables" / "tables")]

    again = await nbdl.fetch([config], dest, tracker="none")
    assert again[0].from_cache
    assert again[0].output == dest / "tables"
    assert len(server.requests_for("/files/tables.tar.gz")) == 1
    assert [p.stat().st_mtime_ns for p in (*marker_files, dest / "tables" / "tables")] == stamps


async def test_batch_extract_unpacks_archives_and_leaves_other_files(
    server: LocalServer, dest: Path
) -> None:
    """fetch(extract=True): zip and tar.gz are unpacked, a plain CSV is left as it is."""
    urls = [
        server.add_file("images.zip", _zip({"img/a.txt": b"a", "img/b.txt": b"b"})),
        server.add_file("t.tgz", _tar_gz(TABLES)),
        server.add_file("labels.csv", b"id,label\n1,2\n"),
    ]
    results = await nbdl.fetch(urls, dest, tracker="none", extract=True)
    assert results.ok, results
    assert [info.output for info in results] == [dest / "images", dest / "t", None]
    assert (dest / "images" / "img" / "b.txt").read_bytes() == b"b"
    assert (dest / "t" / "tables" / "part-2.csv").exists()


async def test_extract_to_names_the_folder_and_a_non_archive_fails(
    server: LocalServer, dest: Path
) -> None:
    """extract_to picks the folder; asking to extract a file that is no archive fails clearly."""
    archive = nbdl.FileConfig(
        server.add_file("d.tar.gz", _tar_gz(TABLES)), extract=True, extract_to="my-data"
    )
    plain = nbdl.FileConfig(server.add_file("notes.txt", b"hello"), extract=True)
    results = await nbdl.fetch([archive, plain], dest, tracker="none")
    assert results[0].output == dest / "my-data"
    assert results[1].status is nbdl.DownloadStatus.FAILED
    assert results[1].error_kind is nbdl.ErrorKind.EXTRACT
    assert "not an archive" in (results[1].error or "")
    assert (dest / "notes.txt").read_bytes() == b"hello"  # the download itself stays


def _hostile_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    return buffer.getvalue()


async def test_hostile_archive_fails_with_kind_extract_and_nothing_outside(
    server: LocalServer, dest: Path, tmp_path: Path
) -> None:
    """A member escaping its folder: FAILED (extract), one line, nothing extracted anywhere."""
    url = server.add_file("evil.tar.gz", _hostile_tar())
    results = await nbdl.fetch([url], dest, tracker="none", extract=True)
    info = results[0]
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error_kind is nbdl.ErrorKind.EXTRACT
    assert "\n" not in (info.error or "")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (dest / "evil").exists()
    assert [p for p in leftovers(dest) if not p.startswith(".nbdl/")] == ["evil.tar.gz"]


async def test_bomb_is_stopped_by_the_limits_a_user_can_raise(
    server: LocalServer, dest: Path
) -> None:
    """A tar.gz of zeros past the ratio limit fails; raised limits let the same archive through."""
    bomb = _tar_gz({"zeros.bin": bytes(20_000_000)}, level=9)
    url = server.add_file("bomb.tar.gz", bomb)
    tight = await nbdl.fetch(
        [url], dest, tracker="none", extract=True, extract_limits=nbdl.ExtractLimits(max_ratio=10)
    )
    assert tight[0].error_kind is nbdl.ErrorKind.EXTRACT
    assert "max_ratio" in (tight[0].error or "")
    assert not (dest / "bomb").exists()
    loose = nbdl.ExtractLimits(max_ratio=float("inf"))
    ok = await nbdl.fetch([url], dest, tracker="none", extract=True, extract_limits=loose)
    assert ok[0].output == dest / "bomb"
    assert (dest / "bomb" / "zeros.bin").stat().st_size == 20_000_000


async def test_a_changed_archive_is_extracted_again(server: LocalServer, dest: Path) -> None:
    """A new archive (new checksum) is downloaded again and replaces the old extraction whole."""
    first = _tar_gz({"v/1.txt": b"one"})
    url = server.add_file("v.tar.gz", first)
    await nbdl.fetch([nbdl.FileConfig(url, checksum=_sha256(first), extract=True)], dest)
    second = _tar_gz({"v/2.txt": b"two"})
    server.add_file("v.tar.gz", second)
    results = await nbdl.fetch(
        [nbdl.FileConfig(url, checksum=_sha256(second), extract=True)], dest, tracker="none"
    )
    assert results.ok, results
    assert sorted(p.name for p in (dest / "v" / "v").iterdir()) == ["2.txt"]


KILLED = """
import asyncio, sys
import nbdl
config = nbdl.FileConfig(sys.argv[1], extract=True)
asyncio.run(nbdl.fetch([config], sys.argv[2], tracker="none"))
"""


async def test_kill_during_extraction_leaves_no_folder_and_the_next_run_extracts(
    server: LocalServer, dest: Path
) -> None:
    """Kill -9 mid-extraction: nothing at the final folder; the next run extracts, no download."""
    rng = __import__("random").Random(5)
    members = {f"big/{i}.bin": rng.randbytes(2_000_000) for i in range(40)}
    url = server.add_file("big.tar.gz", _tar_gz(members, level=1))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(KILLED), url, str(dest)
    )
    deadline = time.monotonic() + 60
    # Polling the folder: there is no event to wait on in another process.
    while not any(dest.glob(".nbdl-extract-*/out/big/*.bin")) if dest.exists() else True:
        assert proc.returncode is None, "the process ended before extraction was seen"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    assert not (dest / "big").exists()
    assert (dest / "big.tar.gz").exists()
    requests = len(server.requests_for("/files/big.tar.gz"))
    results = await nbdl.fetch([nbdl.FileConfig(url, extract=True)], dest, tracker="none")
    assert results[0].output == dest / "big"
    assert len(list((dest / "big" / "big").iterdir())) == 40
    assert len(server.requests_for("/files/big.tar.gz")) == requests  # no download again
    assert not list(dest.glob(".nbdl-extract-*"))


async def test_cancel_during_extraction_leaves_nothing(server: LocalServer, dest: Path) -> None:
    """Cancelling the batch mid-extraction stops it: no final folder, no work folder left."""
    rng = __import__("random").Random(6)
    members = {f"c/{i}.bin": rng.randbytes(2_000_000) for i in range(40)}
    url = server.add_file("c.tar.gz", _tar_gz(members, level=1))
    tracker = _Phases()
    task = asyncio.create_task(nbdl.fetch([url], dest, tracker=tracker, extract=True))
    await tracker.processing.wait()
    await asyncio.sleep(0.05)  # into the extraction itself
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (dest / "c").exists()
    assert not list(dest.glob(".nbdl-extract-*"))


def test_dataset_cell_notebook_runs_offline_and_the_rerun_does_nothing(tmp_path: Path) -> None:
    """notebooks/dataset-cell.ipynb: registry, checksums, extraction; the re-run cell is free."""
    from .test_notebooks import code_cell, errors, run_notebook, stdout

    nb = run_notebook("dataset-cell.ipynb", tmp_path)
    assert errors(nb) == []
    listing = stdout(nb, code_cell(nb, "info.output.name if info.output"))
    assert "tables.tar.gz   -> tables" in listing
    assert "images.zip      -> images" in listing
    assert "labels.csv      -> (not an archive)" in listing
    assert "new requests: 0" in stdout(nb, code_cell(nb, "requests_before"))
    cache = tmp_path / "cache" / "nbdl-dataset-demo"
    assert (cache / "tables" / "tables" / "part-3.csv").exists()
    assert len(list((cache / "images" / "img").iterdir())) == 50
