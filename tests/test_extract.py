"""nbdl._extract on real archives: formats, hostile members, bombs, re-runs, kills, races."""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import signal
import stat
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nbdl import ExtractionError, InvalidConfigError, _extract
from nbdl._extract import (
    ExtractCancelled,
    ExtractLimits,
    archive_format,
    default_target,
    extract,
    extracted,
)

from .archives import (
    Entry,
    compress,
    device,
    fifo,
    file,
    folder,
    hardlink,
    symlink,
    tar_bytes,
    write_tar,
    write_zip,
    zeros_stream,
)

TAR_KINDS = {"tar": "", "tar.gz": "gz", "tar.bz2": "bz2", "tar.xz": "xz", "tar.zst": "zst"}

TREE = [
    folder("top"),
    folder("top/nested/deeper"),
    folder("top/empty", mode=0o700),
    file("top/readme.txt", b"hello\n"),
    file("top/run.sh", b"#!/bin/sh\necho hi\n", mode=0o755),
    file("top/secret.key", b"k", mode=0o600),
    file("top/nested/deeper/data.bin", bytes(range(256)) * 40),
    file("implicit/parent/made.txt", b"no folder entries above me"),
    symlink("top/link-to-readme", "readme.txt"),
    symlink("top/nested/up", "../run.sh"),
]


def snapshot(root: Path) -> dict[str, object]:
    """Every path under ``root`` with its kind, permission bits and content or link target."""
    result: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            result[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            result[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            result[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return result


EXPECTED_TREE = {
    "implicit": ("dir", 0o755),
    "implicit/parent": ("dir", 0o755),
    "implicit/parent/made.txt": ("file", 0o644, b"no folder entries above me"),
    "top": ("dir", 0o755),
    "top/empty": ("dir", 0o700),
    "top/link-to-readme": ("link", "readme.txt"),
    "top/nested": ("dir", 0o755),
    "top/nested/deeper": ("dir", 0o755),
    "top/nested/deeper/data.bin": ("file", 0o644, bytes(range(256)) * 40),
    "top/nested/up": ("link", "../run.sh"),
    "top/readme.txt": ("file", 0o644, b"hello\n"),
    "top/run.sh": ("file", 0o755, b"#!/bin/sh\necho hi\n"),
    "top/secret.key": ("file", 0o600, b"k"),
}


@pytest.fixture(autouse=True)
def _umask() -> object:
    """A known umask, so that folders made without a mode of their own are 0o755."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The download folder the archives are extracted in."""
    path = tmp_path / "data"
    path.mkdir()
    return path


def leftovers(dest: Path) -> list[str]:
    """Names in ``dest`` that are neither nbdl's state folder nor an archive of the test."""
    return sorted(
        name
        for name in os.listdir(dest)
        if name != ".nbdl" and not name.startswith(("archive", "blob"))
    )


def refused(archive: Path, dest: Path, target: str = "out", **kwargs: object) -> str:
    """Extract, expect an ExtractionError, check nothing is left, return the message."""
    with pytest.raises(ExtractionError) as caught:
        extract(archive, dest, target, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    assert leftovers(dest) == []
    return message


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [*TAR_KINDS, "zip"])
def test_every_archive_format_round_trips(data: Path, fmt: str) -> None:
    """Content, file modes, nested and empty folders and inner symlinks come out as archived."""
    archive = data / "archive.bin"
    if fmt == "zip":
        write_zip(archive, TREE)
    else:
        write_tar(archive, TREE, TAR_KINDS[fmt])
    assert archive_format(archive) == fmt
    result = extract(archive, data, "out")
    assert result == data / "out"
    assert snapshot(result) == EXPECTED_TREE
    assert leftovers(data) == ["out"]


def test_tar_hard_links_are_links_to_the_extracted_file(data: Path) -> None:
    """A tar hard link becomes a hard link to the file extracted before it."""
    archive = write_tar(
        data / "archive.tar",
        [file("a/f.txt", b"shared"), hardlink("a/g.txt", "a/f.txt"), hardlink("h", "a/g.txt")],
    )
    result = extract(archive, data, "out")
    assert (result / "h").read_bytes() == b"shared"
    assert (result / "a/f.txt").stat().st_ino == (result / "h").stat().st_ino
    assert (result / "a/f.txt").stat().st_nlink == 3


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zst"])
def test_single_file_formats_give_a_file(data: Path, kind: str) -> None:
    """gz, bz2, xz and zst of one file become that file at dest/target."""
    payload = b"col1,col2\n" + b"1,2\n" * 5000
    archive = data / f"archive.csv.{kind}"
    archive.write_bytes(compress(payload, kind))
    assert archive_format(archive) == kind
    result = extract(archive, data, default_target(archive.name))
    assert result == data / "archive.csv"
    assert result.is_file()
    assert result.read_bytes() == payload


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (compress(tar_bytes([file("a", b"x")]), "gz"), "tar.gz"),
        (compress(tar_bytes([file("a", b"x")]), "bz2"), "tar.bz2"),
        (compress(tar_bytes([file("a", b"x")]), "xz"), "tar.xz"),
        (compress(tar_bytes([file("a", b"x")]), "zst"), "tar.zst"),
        (tar_bytes([file("a", b"x")]), "tar"),
        (compress(b"just text", "gz"), "gz"),
        (compress(b"just text", "zst"), "zst"),
        (b"PK\x03\x04" + bytes(30), "zip"),
        (b"plain text, not an archive\n" * 40, None),
        (b"", None),
        (bytes(2048), None),
    ],
)
def test_format_comes_from_magic_bytes_not_the_suffix(
    data: Path, content: bytes, expected: str | None
) -> None:
    """A .tgz named .zip, a tar named .gz, text named .tar.gz: the bytes decide."""
    for name in ("blob.bin", "blob.zip", "blob.tar.gz", "blob"):
        path = data / name
        path.write_bytes(content)
        assert archive_format(path) == expected


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("images.tar.gz", "images"),
        ("x.tgz", "x"),
        ("a.zip", "a"),
        ("data.csv.gz", "data.csv"),
        ("t.tbz2", "t"),
        ("t.txz", "t"),
        ("t.tar.zst", "t"),
        ("t.TAR.XZ", "t"),
        ("t.tzst", "t"),
        ("w.bz2", "w"),
        ("data.bin", "data"),
        ("archive", "archive_extracted"),
        (".tar.gz", "extracted"),
        ("..zip", "extracted"),
        ("...", "extracted"),
    ],
)
def test_default_target(name: str, target: str) -> None:
    """The default folder is the name less its archive suffix; never empty, '.', '..' or itself."""
    assert default_target(name) == target


def test_not_an_archive_is_refused(data: Path) -> None:
    """A file nbdl cannot recognise gets a clear error, and nothing is created."""
    archive = data / "archive.txt"
    archive.write_text("hello")
    assert "not an archive nbdl knows" in refused(archive, data)


# --- hostile archives ------------------------------------------------------------------------

HOSTILE_TARS = {
    "absolute": ([file("/tmp/nbdl-evil", b"x")], "absolute path"),
    "dotdot": ([file("../../escaped", b"x")], "'..'"),
    "dotdot-inside": ([file("a/../../escaped", b"x")], "'..'"),
    "drive-letter": ([file("C:/escaped", b"x")], "drive letter"),
    "backslash": ([file("..\\..\\escaped", b"x")], "backslash"),
    "symlink-out": ([symlink("link", "../../..")], "outside the folder"),
    "symlink-absolute": ([symlink("link", "/etc")], "absolute path"),
    "symlink-backslash": ([symlink("link", "..\\..\\etc")], "backslash"),
    "symlink-drive": ([symlink("link", "C:/Windows")], "absolute path"),
    "hardlink-out": ([hardlink("link", "../../escaped")], "'..'"),
    "hardlink-absolute": ([hardlink("link", "/etc/passwd")], "absolute path"),
    "hardlink-to-symlink": (
        [symlink("s", "f"), file("f", b"x"), hardlink("h", "s")],
        "symlink",
    ),
    # Each link is inside on its own; followed together they lead one level above the folder.
    "link-chain": (
        [folder("d"), symlink("d/b", ".."), symlink("l", "d/b/..")],
        "through other links",
    ),
    "link-chain-loop": ([symlink("a", "b"), symlink("b", "a")], "through other links"),
    "write-through-symlink": (
        [folder("sub"), symlink("s", "sub"), file("s/evil", b"x")],
        "through the symlink",
    ),
    "write-through-chained-symlink": (
        [folder("d"), symlink("d/b", ".."), symlink("l", "d/b/.."), file("l/escaped", b"x")],
        "through the symlink",
    ),
    "replace-symlink": ([symlink("s", "x"), file("s", b"x")], "replace the symlink"),
    "device": ([device("null")], "device"),
    "fifo": ([fifo("pipe")], "fifo"),
}


@pytest.mark.parametrize("data_filter", ["with-data-filter", "without-data-filter"])
@pytest.mark.parametrize("case", HOSTILE_TARS)
def test_hostile_tar_is_refused_and_nothing_escapes(
    tmp_path: Path, data: Path, case: str, data_filter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every escape (paths, links, chains, writes through links, devices) is refused whole.

    Without tarfile's data filter (Python < 3.11.4) our own checks must refuse the same.
    """
    if data_filter == "without-data-filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    entries, why = HOSTILE_TARS[case]
    archive = write_tar(data / "archive.tar.gz", entries, "gz")
    before = sorted(tmp_path.parent.iterdir())
    message = refused(archive, data)
    assert why in message
    assert "cannot extract archive.tar.gz" in message
    assert sorted(tmp_path.parent.iterdir()) == before
    assert sorted(os.listdir(tmp_path)) == ["data"]
    assert not Path("/tmp/nbdl-evil").exists()


def test_setuid_setgid_sticky_and_world_write_are_dropped(data: Path) -> None:
    """Modes lose setuid, setgid, sticky and group/other write bits; owner keeps rw."""
    archive = write_tar(
        data / "archive.tar",
        [
            file("suid", b"x", mode=0o4755),
            file("sgid", b"x", mode=0o2755),
            file("world", b"x", mode=0o666),
            file("noread", b"x", mode=0o000),
            folder("sticky", mode=0o1777),
        ],
    )
    result = extract(archive, data, "out")
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in result.iterdir()}
    assert modes == {"suid": 0o755, "sgid": 0o755, "world": 0o644, "noread": 0o600, "sticky": 0o755}


HOSTILE_ZIPS = {
    "dotdot": ([file("../../escaped", b"x")], "'..'"),
    "absolute": ([file("/tmp/nbdl-evil", b"x")], "absolute path"),
    "drive-letter": ([file("C:\\escaped", b"x")], "drive letter"),
    "backslash-dotdot": ([file("..\\..\\escaped", b"x")], "'..'"),
    "symlink-out": ([symlink("link", "../../../etc")], "outside the folder"),
    "symlink-absolute": ([symlink("link", "/etc")], "absolute path"),
    "write-through-symlink": ([symlink("s", "."), file("s/x", b"x")], "through the symlink"),
    "device": ([Entry("null", "chr")], "device"),
}


@pytest.mark.parametrize("case", HOSTILE_ZIPS)
def test_hostile_zip_is_refused(tmp_path: Path, data: Path, case: str) -> None:
    """Zips get no tarfile filter: our own checks refuse bad names and links in zips too."""
    entries, why = HOSTILE_ZIPS[case]
    archive = write_zip(data / "archive.zip", entries)
    message = refused(archive, data)
    assert why in message
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_zip_symlinks_inside_are_made_as_symlinks(data: Path) -> None:
    """A zip symlink that stays inside becomes a symlink, like unzip makes it."""
    archive = write_zip(data / "archive.zip", [file("d/f", b"x"), symlink("l", "d/f")])
    result = extract(archive, data, "out")
    assert os.readlink(result / "l") == "d/f"
    assert (result / "l").read_bytes() == b"x"


def test_zip_backslash_names_are_folders(data: Path) -> None:
    """Zips from old Windows tools separate folders with backslashes: they become folders."""
    archive = write_zip(data / "archive.zip", [file("dir\\sub\\f.txt", b"x")])
    result = extract(archive, data, "out")
    assert (result / "dir" / "sub" / "f.txt").read_bytes() == b"x"


# --- bombs and limits ------------------------------------------------------------------------

SMALL = ExtractLimits(max_ratio=2)  # archives under 1 MiB may expand to 2 MiB


def test_zip_bomb_is_stopped(data: Path) -> None:
    """A zip of zeros past the ratio limit is refused, naming the limit and how to raise it."""
    archive = write_zip(data / "archive.zip", [file(f"z{i}", bytes(1 << 20)) for i in range(4)])
    message = refused(archive, data, limits=SMALL)
    assert "ExtractLimits.max_ratio=2" in message
    assert "raise it" in message


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_tar_bomb_is_stopped(data: Path, kind: str) -> None:
    """A compressed tar of zeros is stopped by the limits while it streams."""
    archive = write_tar(
        data / "archive.tar", [file(f"z{i}", bytes(1 << 20)) for i in range(4)], kind
    )
    message = refused(archive, data, limits=SMALL)
    assert "max_ratio" in message


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_single_file_bomb_is_stopped_by_counting_bytes(data: Path, kind: str) -> None:
    """A gz/zst declares no size: the bytes written are counted, and it stops at the limit."""
    archive = data / f"archive.{kind}"
    archive.write_bytes(zeros_stream(kind, 8 << 20))
    written: list[int] = []
    message = refused(
        archive,
        data,
        limits=ExtractLimits(max_bytes=3 << 20),
        progress=lambda d, t: written.append(d),
    )
    assert "max_bytes=3145728" in message
    assert max(written) <= 3 << 20


def test_bomb_with_default_limits_is_stopped(data: Path) -> None:
    """With the default limits a 90 KB stream of 256 MiB zeros stops at 200 x 1 MiB."""
    archive = data / "archive.zst"
    archive.write_bytes(zeros_stream("zst", 256 << 20))
    assert archive.stat().st_size < 1 << 20
    message = refused(archive, data)
    assert "200 times its size" in message


def test_raised_limits_let_a_big_archive_through(data: Path) -> None:
    """The archive a bomb test refuses passes once the user raises the ratio."""
    archive = write_tar(
        data / "archive.tar", [file(f"z{i}", bytes(1 << 20)) for i in range(4)], "gz"
    )
    result = extract(archive, data, "out", limits=ExtractLimits(max_ratio=math.inf))
    assert sorted(p.stat().st_size for p in result.iterdir()) == [1 << 20] * 4


def test_too_many_members_is_refused(data: Path) -> None:
    """More files than max_members is refused for tar and zip, naming the limit."""
    entries = [file(f"f{i}") for i in range(11)]
    for archive in (
        write_tar(data / "archive.tar", entries),
        write_zip(data / "archive.zip", entries),
    ):
        message = refused(archive, data, limits=ExtractLimits(max_members=10))
        assert "ExtractLimits.max_members=10" in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_bytes": 0},
        {"max_bytes": -1},
        {"max_bytes": 1.5},
        {"max_bytes": True},
        {"max_members": 0},
        {"max_ratio": 0},
        {"max_ratio": math.nan},
        {"max_ratio": "10"},
    ],
)
def test_bad_limits_are_invalid_config(kwargs: dict[str, object]) -> None:
    """Limits that make no sense raise InvalidConfigError (a ValueError) at once."""
    with pytest.raises(InvalidConfigError, match="ExtractLimits"):
        ExtractLimits(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target", ["", ".", "..", "a/b", "../x", ".nbdl", ".nbdl-extract-x", "c:x"]
)
def test_target_must_be_a_plain_name(data: Path, target: str) -> None:
    """A target with separators, dots or our own prefixes is refused before anything runs."""
    archive = write_tar(data / "archive.tar", [file("f")])
    with pytest.raises(InvalidConfigError):
        extract(archive, data, target)
    assert leftovers(data) == []


# --- re-runs and replacement -----------------------------------------------------------------


def test_rerun_finds_the_result_and_extracts_nothing(data: Path) -> None:
    """A second run is answered by the marker: no progress, marker and result untouched."""
    archive = write_tar(data / "archive.tar.gz", TREE, "gz")
    assert extracted(archive, data, "out") is None
    result = extract(archive, data, "out")
    marker = data / ".nbdl" / "extracted" / "out.json"
    before = (marker.stat().st_mtime_ns, result.stat().st_ino, result.stat().st_mtime_ns)
    assert extracted(archive, data, "out") == result
    calls: list[int] = []
    assert extract(archive, data, "out", progress=lambda d, t: calls.append(d)) == result
    assert calls == []
    assert (marker.stat().st_mtime_ns, result.stat().st_ino, result.stat().st_mtime_ns) == before
    saved = json.loads(marker.read_text())
    assert saved["complete"] is True
    assert saved["archive"]["size"] == archive.stat().st_size
    assert saved["format"] == "tar.gz"


def test_extracted_is_none_when_the_result_is_gone_or_not_ours(data: Path) -> None:
    """Deleting the result, or putting another folder there, makes extracted() say no."""
    archive = write_tar(data / "archive.tar", [file("f", b"1")])
    result = extract(archive, data, "out")
    os.rename(result, data / "moved")
    assert extracted(archive, data, "out") is None
    (data / "out").mkdir()
    assert extracted(archive, data, "out") is None


@pytest.mark.parametrize("rename", ["exchange", "aside"])
def test_changed_archive_replaces_the_old_result_whole(
    data: Path, rename: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new archive at the same path is extracted again; no file of the old result survives."""
    if rename == "aside":
        monkeypatch.setattr(_extract, "_RENAMEAT2", None)  # as on macOS or an old glibc
    archive = data / "archive.tar.gz"
    write_tar(archive, [file("old-only", b"1"), file("both", b"old")], "gz")
    first = extract(archive, data, "out")
    fresh = write_tar(data / "archive.new", [file("both", b"new"), file("new-only", b"2")], "gz")
    os.replace(fresh, archive)
    assert extracted(archive, data, "out") is None
    second = extract(archive, data, "out")
    assert second == first
    assert snapshot(second) == {
        "both": ("file", 0o644, b"new"),
        "new-only": ("file", 0o644, b"2"),
    }
    assert extracted(archive, data, "out") == second
    assert leftovers(data) == ["out"]


def test_a_crash_after_the_rename_is_repaired_by_the_next_run(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill between the rename and the complete marker: the next run redoes it."""
    archive = write_tar(data / "archive.tar", [file("f", b"1")])
    real_save = _extract._save_marker

    def save(dest: Path, marker: _extract._Marker, name: str) -> None:
        if marker.complete:
            raise KeyboardInterrupt  # stands for a kill: nothing after this line runs
        real_save(dest, marker, name)

    monkeypatch.setattr(_extract, "_save_marker", save)
    with pytest.raises(KeyboardInterrupt):
        extract(archive, data, "out")
    monkeypatch.undo()
    assert (data / "out").is_dir()
    assert extracted(archive, data, "out") is None
    assert extract(archive, data, "out") == data / "out"
    assert extracted(archive, data, "out") == data / "out"


def test_a_file_in_the_way_is_refused_and_kept(data: Path) -> None:
    """User data at dest/target (no marker) is never replaced or deleted."""
    mine = data / "out"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    archive = write_tar(data / "archive.tar", [file("f", b"1")])
    with pytest.raises(ExtractionError, match="in the way"):
        extract(archive, data, "out")
    assert (mine / "notes.txt").read_text() == "mine"
    single = data / "archive.gz"
    single.write_bytes(compress(b"x", "gz"))
    (data / "plain").write_text("mine too")
    with pytest.raises(ExtractionError, match="in the way"):
        extract(single, data, "plain")
    assert (data / "plain").read_text() == "mine too"


def test_a_folder_swapped_in_by_a_person_is_not_ours(data: Path) -> None:
    """A marker is no licence: a different folder at the target (another inode) is refused."""
    archive = write_tar(data / "archive.tar", [file("f", b"1")])
    result = extract(archive, data, "out")
    os.rename(result, data / "ours")
    result.mkdir()
    (result / "precious").write_text("x")
    write_tar(archive, [file("f", b"2")])
    with pytest.raises(ExtractionError, match="in the way"):
        extract(archive, data, "out")
    assert (result / "precious").read_text() == "x"


def test_the_archive_itself_cannot_be_the_target(data: Path) -> None:
    """Extracting 'blob' into 'blob' would destroy the archive: refused as bad input."""
    archive = data / "blob"
    archive.write_bytes(compress(b"x", "gz"))
    with pytest.raises(InvalidConfigError, match="archive itself"):
        extract(archive, data, "blob")
    assert archive.read_bytes() == compress(b"x", "gz")


def test_a_missing_archive_is_an_extraction_error(data: Path) -> None:
    """An archive that is not there gives a one-line ExtractionError, and nothing is created."""
    with pytest.raises(ExtractionError, match="No such file"):
        extract(data / "archive.tar", data, "out")
    assert leftovers(data) == []


# --- broken archives -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated-tar.gz", "truncated-tar", "bad-zip", "truncated-gz"])
def test_corrupt_archive_is_a_one_line_extraction_error(data: Path, kind: str) -> None:
    """A truncated or damaged archive raises ExtractionError saying it is broken."""
    big = [file(f"f{i}", os.urandom(50_000)) for i in range(4)]
    if kind == "truncated-tar.gz":
        raw = compress(tar_bytes(big), "gz")
        content = raw[: len(raw) // 2]
    elif kind == "truncated-tar":
        raw = tar_bytes(big)
        content = raw[: len(raw) // 2]
    elif kind == "bad-zip":
        content = b"PK\x03\x04" + os.urandom(3000)
    else:
        raw = compress(os.urandom(100_000), "gz")
        content = raw[: len(raw) // 2]
    archive = data / "archive.bin"
    archive.write_bytes(content)
    assert "broken" in refused(archive, data)


def test_a_giant_tar_header_is_refused(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pax header bigger than the header limit (a memory bomb) is refused while it streams."""
    monkeypatch.setattr(_extract, "_MAX_TAR_HEADER", 1 << 20)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * (4 << 20)}
        tar.addfile(info, io.BytesIO(b""))
    archive = data / "archive.tar.gz"
    archive.write_bytes(compress(buffer.getvalue(), "gz"))
    assert "tar header is larger than 1 MiB" in refused(archive, data)


def test_damaged_zip_member_fails_its_crc(data: Path) -> None:
    """A flipped byte inside a zip member's data is caught (CRC) and nothing is kept."""
    archive = write_zip(data / "archive.zip", [file("f", os.urandom(20_000))])
    raw = bytearray(archive.read_bytes())
    raw[200] ^= 0xFF
    archive.write_bytes(bytes(raw))
    assert "broken" in refused(archive, data)


# --- cancel, threads, processes, kill -9 -----------------------------------------------------


def test_cancel_stops_soon_and_leaves_nothing(data: Path) -> None:
    """Setting the event mid-way raises ExtractCancelled; no result, no work folder."""
    archive = write_tar(data / "archive.tar", [file(f"z{i}", bytes(1 << 20)) for i in range(8)])
    cancel = threading.Event()
    calls: list[int] = []

    def progress(done: int, total: int | None) -> None:
        calls.append(done)
        cancel.set()

    with pytest.raises(ExtractCancelled):
        extract(archive, data, "out", cancel=cancel, progress=progress)
    assert calls == [1 << 20]
    assert leftovers(data) == []
    assert extracted(archive, data, "out") is None


def test_cancel_while_waiting_for_another_extraction(data: Path) -> None:
    """A thread waiting on the target's lock gives up when cancelled."""
    archive = write_tar(data / "archive.tar", [file("f")])
    (data / ".nbdl" / "extracted").mkdir(parents=True)
    holder = os.open(data / ".nbdl" / "extracted" / "out.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(ExtractCancelled):
            extract(archive, data, "out", cancel=cancel)
    finally:
        os.close(holder)
    assert leftovers(data) == []


def test_threads_extracting_the_same_archive_all_succeed(data: Path) -> None:
    """Several threads at once: one extracts, the others find its result; one correct copy."""
    archive = write_tar(data / "archive.tar.gz", TREE, "gz")
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(extract(archive, data, "out"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    others = [
        threading.Thread(target=lambda i=i: extract(archive, data, f"copy{i}")) for i in range(2)
    ]
    for thread in threads + others:
        thread.start()
    for thread in threads + others:
        thread.join()
    assert errors == []
    assert results == [data / "out"] * 4
    assert snapshot(data / "out") == EXPECTED_TREE == snapshot(data / "copy0")
    assert leftovers(data) == ["copy0", "copy1", "out"]


def test_threads_on_different_targets_do_not_clean_each_other(tmp_path: Path) -> None:
    """A thread's cleanup never removes another live thread's new work folder (a real race)."""
    archive = write_tar(tmp_path / "archive.tar", [file(f"f{i}", b"x" * 100) for i in range(20)])
    for round_ in range(4):
        dest = tmp_path / f"round{round_}"
        errors: list[BaseException] = []

        def run(i: int, dest: Path = dest, errors: list[BaseException] = errors) -> None:
            try:
                extract(archive, dest, f"t{i}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert leftovers(dest) == [f"t{i}" for i in range(6)]


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nbdl._extract import extract

    archive, dest, started = map(Path, sys.argv[1:4])

    def slow(done, total):
        started.touch()
        time.sleep(float(sys.argv[4]))

    print(extract(archive, dest, "out", progress=slow))
    """
)


def run_script(archive: Path, dest: Path, started: Path, delay: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(archive), str(dest), str(started), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_leaves_nothing_and_the_next_run_cleans_up(tmp_path: Path, data: Path) -> None:
    """A SIGKILL mid-extraction leaves no result; the next run extracts and removes the debris."""
    archive = write_tar(data / "archive.tar", [file(f"z{i}", bytes(1 << 20)) for i in range(20)])
    started = tmp_path / "started"
    child = run_script(archive, data, started, delay=0.2)
    deadline = time.monotonic() + 30
    while not started.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert not (data / "out").exists()
    stale = [n for n in os.listdir(data) if n.startswith(".nbdl-extract-")]
    assert len(stale) == 1
    assert extracted(archive, data, "out") is None
    result = extract(archive, data, "out")
    assert len(list(result.iterdir())) == 20
    assert leftovers(data) == ["out"]


def test_a_live_work_folder_is_never_cleaned(data: Path) -> None:
    """Work folders whose lock is held survive a cleanup; unlocked ones are removed."""
    live = data / ".nbdl-extract-live"
    dead = data / ".nbdl-extract-dead"
    for folder_ in (live, dead):
        (folder_ / "out").mkdir(parents=True)
        (folder_ / "out" / "partial").write_text("x")
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        extract(write_tar(data / "archive.tar", [file("f")]), data, "out")
        assert (live / "out" / "partial").exists()
        assert not dead.exists()
    finally:
        os.close(fd)


def test_two_processes_extracting_at_once_both_succeed(tmp_path: Path, data: Path) -> None:
    """Two processes racing on one archive both succeed and leave one correct result."""
    archive = write_tar(
        data / "archive.tar.gz", [file(f"z{i}", bytes(1 << 20)) for i in range(6)], "gz"
    )
    children = [run_script(archive, data, tmp_path / f"started{i}", 0.05) for i in range(2)]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(data / "out")] * 2
    assert sorted(p.stat().st_size for p in (data / "out").iterdir()) == [1 << 20] * 6
    assert leftovers(data) == ["out"]


def test_progress_reports_bytes_and_zip_totals(data: Path) -> None:
    """Progress calls get growing byte counts, about one a MiB at most, ending at the total."""
    sizes = [3 << 20, 10, 2 << 20]
    archive = write_zip(
        data / "archive.zip", [file(f"f{i}", bytes(n)) for i, n in enumerate(sizes)]
    )
    calls: list[tuple[int, int | None]] = []
    extract(archive, data, "out", progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (sum(sizes), sum(sizes))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) <= 8
