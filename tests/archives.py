"""Builders of real archives, benign and hostile, for the extraction tests."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import stat
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd


@dataclass(frozen=True)
class Entry:
    """One member: ``kind`` is file, dir, symlink, hardlink, chr or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    link: str = ""


def file(name: str, data: bytes = b"", mode: int = 0o644) -> Entry:
    return Entry(name, "file", data, mode)


def folder(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, "dir", mode=mode)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, "symlink", mode=0o777, link=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", link=target)


def device(name: str) -> Entry:
    return Entry(name, "chr")


def fifo(name: str) -> Entry:
    return Entry(name, "fifo")


_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def tar_bytes(entries: Iterable[Entry]) -> bytes:
    """A tar (PAX format) holding ``entries`` exactly as given, hostile names included."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = _TAR_TYPES[entry.kind]
            info.mode = entry.mode
            info.mtime = 1_700_000_000
            info.linkname = entry.link
            if entry.kind == "chr":
                info.devmajor, info.devminor = 1, 3
            info.size = len(entry.data) if entry.kind == "file" else 0
            tar.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    return buffer.getvalue()


def compress(data: bytes, kind: str) -> bytes:
    """``data`` compressed as ``kind``: "" (as is), gz, bz2, xz or zst."""
    if kind == "":
        return data
    if kind == "gz":
        return gzip.compress(data, compresslevel=1)
    if kind == "bz2":
        return bz2.compress(data, compresslevel=1)
    if kind == "xz":
        return lzma.compress(data, preset=0)
    if kind == "zst":
        return zstd.compress(data)
    raise ValueError(kind)


def write_tar(path: Path, entries: Iterable[Entry], kind: str = "") -> Path:
    """Write a tar of ``entries``, compressed as ``kind`` ("" for none)."""
    path.write_bytes(compress(tar_bytes(entries), kind))
    return path


_ZIP_TYPES = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "chr": stat.S_IFCHR,
    "fifo": stat.S_IFIFO,
}


def write_zip(path: Path, entries: Iterable[Entry]) -> Path:
    """Write a zip of ``entries`` made on Unix (modes and types in external_attr)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in entries:
            info = zipfile.ZipInfo(entry.name, date_time=(2024, 1, 2, 3, 4, 6))
            info.create_system = 3
            info.external_attr = (_ZIP_TYPES[entry.kind] | entry.mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = entry.link.encode() if entry.kind == "symlink" else entry.data
            archive.writestr(info, data)
    return path


def zeros_stream(kind: str, size: int) -> bytes:
    """``size`` zero bytes compressed as ``kind``, built in chunks (a bomb, without the RAM)."""
    chunk = bytes(1 << 20)
    if kind == "zst":
        compressor = zstd.ZstdCompressor()
        parts = [compressor.compress(chunk) for _ in range(size // len(chunk))]
        return b"".join([*parts, compressor.flush()])
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as out:
        for _ in range(size // len(chunk)):
            out.write(chunk)
    return buffer.getvalue()
