"""Safe, atomic, once-only extraction of downloaded archives (synchronous; run it in a thread).

What lives where, inside the download folder ``dest``::

    dest/<target>                       the result: a folder (tar, zip), a file (gz, bz2, xz, zst)
    dest/.nbdl/extracted/<target>.json  marker: which archive made the result (see _Marker)
    dest/.nbdl/extracted/<target>.lock  flock'ed by the one thread or process extracting <target>
    dest/.nbdl-extract-XXXXXXXX/        work folder of one running extraction, flock'ed by it
        out                             the result being built; renamed to dest/<target> when whole

Safety does not rest on one check.  Member names are checked by us (no absolute path, ``..``,
drive letter, backslash in tar names, NUL), then by tarfile's ``data`` filter where Python has it
(3.11.4+).  We write every file ourselves: nothing follows a symlink, because symlinks are created
only after every file and folder, and a member inside (or a hard link through) a symlink of the
archive is refused.  When all links exist, each one is resolved step by step on disk (our own
resolver: ``os.path.realpath`` gives up silently on loops and long paths, which is how the
data filter was bypassed, CVE-2025-4517) and must stay inside.  Devices and fifos are refused,
setuid/setgid/sticky and group/other write bits dropped.  Sizes are counted as bytes are
written, whatever an archive declares.  Anything refused raises ``ExtractionError`` and the work
folder is deleted: nothing ever appears at the final path before it is whole.
"""

from __future__ import annotations

import bz2
import contextlib
import ctypes
import errno
import gzip
import json
import lzma
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn, Protocol

from ._errors import ExtractionError, InvalidConfigError
from ._models import ExtractLimits
from ._naming import sanitize_filename
from ._state import STATE_DIR

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

if sys.platform != "win32":
    import fcntl

__all__ = [
    "ExtractCancelled",
    "ExtractLimits",
    "archive_format",
    "default_target",
    "extract",
    "extracted",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

MARKER_DIR = "extracted"
WORK_PREFIX = ".nbdl-extract-"
_MARKER_VERSION = 1
_CHUNK = 1 * MiB
#: The ratio limit counts small archives as this big: a 3 KB archive of text that expands to
#: 900 KB is no bomb, and refusing it would only annoy.
_RATIO_FLOOR = 1 * MiB
#: A tar header (long name, pax record) bigger than this is refused: tarfile reads one whole
#: into memory, so it would be a memory bomb, and real ones are a few KiB.
_MAX_TAR_HEADER = 64 * MiB
_MAX_LINK_HOPS = 40  # Linux's own limit of symlinks followed in one path resolution
_PROGRESS_SECONDS = 0.25

_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

#: What a broken or truncated archive raises while being read, across formats.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # gzip.BadGzipFile, bz2 "Invalid data stream", a read error of the archive file
    EOFError,  # truncated gzip/bz2/xz/zstd stream
    zlib.error,
    lzma.LZMAError,
    zstd.ZstdError,
    tarfile.TarError,
    zipfile.BadZipFile,
    NotImplementedError,  # zip compression method that zipfile lacks
    RuntimeError,  # zipfile: encrypted member without a password
    ValueError,
)


class ExtractCancelled(ExtractionError):
    """Extraction stopped because the ``cancel`` event was set; nothing was left behind.

    It derives from ``ExtractionError`` so that code catching extraction failures still sees
    one; catch ``ExtractCancelled`` first to tell a cancel from a failure.
    """


# --- detection and naming -------------------------------------------------------------------

_STREAM_FORMATS = ("gz", "bz2", "xz", "zst")
_FORMATS = ("tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst", "zip", *_STREAM_FORMATS)
#: Longest first, so that ``.tar.gz`` wins over ``.gz``.
_SUFFIXES = (
    ".tar.zstd",
    ".tar.bz2",
    ".tar.zst",
    ".tar.gz",
    ".tar.xz",
    ".tbz2",
    ".tzst",
    ".zstd",
    ".tar",
    ".tbz",
    ".tgz",
    ".txz",
    ".zip",
    ".bz2",
    ".zst",
    ".gz",
    ".xz",
)


def archive_format(path: Path) -> str | None:
    """The archive format of ``path`` by its magic bytes, whatever its name; None if unknown.

    One of ``"tar"``, ``"tar.gz"``, ``"tar.bz2"``, ``"tar.xz"``, ``"tar.zst"``, ``"zip"``, and the
    single-file ``"gz"``, ``"bz2"``, ``"xz"``, ``"zst"``.  A compressed stream counts as a tar when
    its first 512 decompressed bytes are a tar header with a valid checksum.  Note that zip-based
    files (.npz, .xlsx, .docx, .jar, .whl) are zips by their bytes.  Raises OSError if the file
    cannot be read.
    """
    with open(path, "rb") as file:
        return _detect(file)


def _detect(file: IO[bytes]) -> str | None:
    """``archive_format`` of an open file; leaves it at offset 0."""
    head = file.read(512)
    file.seek(0)
    kind = _compression(head)
    if kind is None:
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
            return "zip"
        return "tar" if _is_tar_header(head) else None
    stream = _decompressor(kind, file)
    try:
        first = stream.read(512)
    except _DECODE_ERRORS:
        first = b""  # broken: the extraction will say so
    finally:
        stream.close()
    file.seek(0)
    return f"tar.{kind}" if _is_tar_header(first) else kind


def _compression(head: bytes) -> str | None:
    if head[:2] == b"\x1f\x8b":
        return "gz"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[3:4] != b"0":
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    # A zstd frame, or a skippable frame (magic 0x184D2A5?) that may precede one.
    if head[:4] == b"\x28\xb5\x2f\xfd" or (head[1:4] == b"\x2a\x4d\x18" and head[0] >> 4 == 5):
        return "zst"
    return None


def _is_tar_header(block: bytes) -> bool:
    """Whether ``block`` is a tar header: its checksum field matches (old v7 tars have no magic)."""
    if len(block) < 512 or block[0] == 0:
        return False
    field = block[148:156].replace(b"\x00", b" ").strip()
    try:
        stored = int(field, 8)
    except ValueError:
        return False
    # The checksum is computed with its own 8-byte field read as spaces.
    return stored == sum(block[:148]) + 8 * 0x20 + sum(block[156:512])


class _Stream(Protocol):
    """What we read archives through: a file, or a decompressor wrapping one."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def _decompressor(kind: str, file: IO[bytes]) -> _Stream:
    """A decompressing reader over ``file``; closing it leaves ``file`` open."""
    if kind == "gz":
        return gzip.GzipFile(fileobj=file, mode="rb")
    if kind == "bz2":
        return bz2.BZ2File(file, "rb")
    if kind == "xz":
        return lzma.LZMAFile(file, "rb")
    return zstd.ZstdFile(file, "rb")


def default_target(name: str) -> str:
    """Where ``name`` is extracted by default: the name without its archive suffix.

    ``images.tar.gz`` -> ``images``, ``x.tgz`` -> ``x``, ``data.csv.gz`` -> ``data.csv``; a name
    without a known suffix loses its last extension (``data.bin`` -> ``data``).  Never empty,
    never ``.``/``..``, never the name itself, always a plain name.
    """
    lower = name.lower()
    stem = ""
    for suffix in _SUFFIXES:
        if lower.endswith(suffix):
            stem = name[: -len(suffix)]
            break
    else:
        before, dot, _ = name.rpartition(".")
        stem = before if dot else f"{name}_extracted"
    target = sanitize_filename(stem)
    if target == name:
        target = sanitize_filename(f"{name}_extracted")
    if not target or target == name:  # nothing usable left, or cut back to the name
        target = "extracted"
    return target


def _check_target(target: object) -> str:
    # sanitize_filename refuses separators, '..', leading dots (so '.nbdl' and our work
    # folders), control and reserved characters: what is left is a plain name inside dest.
    if not isinstance(target, str) or not target or target != sanitize_filename(target):
        raise InvalidConfigError(
            f"extraction target {target!r} is not a plain name (no folders, '..', leading dot)"
        )
    return target


# --- markers: what a finished extraction remembers ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Marker:
    """``dest/.nbdl/extracted/<target>.json``; see ``_marker_json`` for the format."""

    target: str
    archive: tuple[int, int, int, int]  # size, mtime_ns, dev, inode of the archive
    format: str
    #: (dev, inode) of dest/<target> once it is in place.
    result: tuple[int, int] | None
    #: (dev, inode) of a result being moved into place; the move may have happened or not.
    pending: tuple[int, int] | None
    complete: bool

    def owns(self, st: os.stat_result) -> bool:
        """Whether the thing at dest/<target> (``st``, from lstat) is one nbdl put there."""
        return (st.st_dev, st.st_ino) in (self.result, self.pending)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)


def _marker_path(dest: Path, target: str) -> Path:
    return dest / STATE_DIR / MARKER_DIR / f"{target}.json"


def _load_marker(dest: Path, target: str) -> _Marker | None:
    try:
        data = json.loads(_marker_path(dest, target).read_text("utf-8"))
        archive = data["archive"]
        marker = _Marker(
            target=data["target"],
            archive=(archive["size"], archive["mtime_ns"], archive["dev"], archive["ino"]),
            format=data["format"],
            result=_pair(data["result"]),
            pending=_pair(data["pending"]),
            complete=data["complete"] is True,
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if data.get("version") != _MARKER_VERSION or marker.target != target:
        return None
    if not all(isinstance(value, int) for value in marker.archive):
        return None
    return marker


def _pair(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, dict) and all(isinstance(value.get(k), int) for k in ("dev", "ino")):
        return (value["dev"], value["ino"])
    raise ValueError("bad marker")


def _marker_json(marker: _Marker, archive_name: str) -> str:
    size, mtime_ns, dev, ino = marker.archive

    def pair(value: tuple[int, int] | None) -> dict[str, int] | None:
        return None if value is None else {"dev": value[0], "ino": value[1]}

    return json.dumps(
        {
            "version": _MARKER_VERSION,
            "target": marker.target,
            "archive": {
                "name": archive_name,
                "size": size,
                "mtime_ns": mtime_ns,
                "dev": dev,
                "ino": ino,
            },
            "format": marker.format,
            "result": pair(marker.result),
            "pending": pair(marker.pending),
            "complete": marker.complete,
        },
        indent=1,
    )


def _save_marker(dest: Path, marker: _Marker, archive_name: str) -> None:
    """Write the marker atomically: a temporary file, fsync'ed, then ``os.replace``."""
    path = _marker_path(dest, marker.target)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(_marker_json(marker, archive_name))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def extracted(archive: Path, dest: Path, target: str) -> Path | None:
    """``dest/target`` if this very archive was extracted there and the result is still there.

    Cheap enough for every run: two stats and a small JSON file, no decompression.  "This very
    archive" means the same size, mtime_ns, device and inode as when it was extracted.
    """
    _check_target(target)
    marker = _load_marker(Path(dest), target)
    if marker is None or not marker.complete:
        return None
    final = Path(dest) / target
    try:
        if _identity(os.stat(archive)) != marker.archive:
            return None
        st = os.lstat(final)
    except OSError:
        return None
    if marker.result != (st.st_dev, st.st_ino) or stat.S_ISLNK(st.st_mode):
        return None
    return final


# --- locks ----------------------------------------------------------------------------------


def _try_lock(fd: int) -> bool:
    """Take an exclusive flock without waiting; False if someone holds it.

    flock (unlike lockf) locks an open file description, so two threads of one process exclude
    each other too; the OS drops it when the holder dies, even by kill -9.
    """
    if sys.platform == "win32":
        return True  # no flock: extractions are not serialised across processes there
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _lock_target(path: Path, cancel: threading.Event | None, name: str) -> int:
    """Open and lock ``path`` (created if missing, never deleted), waiting for the holder."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o644)
    delay = 0.01
    try:
        while not _try_lock(fd):
            if cancel is not None and cancel.wait(delay):
                raise ExtractCancelled(f"extraction of {_show(name)} cancelled")
            if cancel is None:
                time.sleep(delay)
            delay = min(delay * 2, 0.2)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _WorkDir:
    """``dest/.nbdl-extract-XXXXXXXX``, flock'ed for as long as the extraction lives.

    The lock is on the folder's own descriptor, so that a later run can tell a dead writer's
    folder (lock free) from a live one's.
    """

    def __init__(self, dest: Path) -> None:
        for _ in range(100):
            path = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=dest))
            # Another thread's or process's cleanup may lock and delete the new folder before
            # we lock it: if it is gone before we open it, or we lose the race for the lock, or
            # it is gone once we have the lock, it was the cleaner's; start over.
            try:
                fd = _open_dir(path)
            except FileNotFoundError:
                continue
            if fd is None or (_try_lock(fd) and _same_file(path, fd)):
                self.path = path
                self._fd = fd
                return
            os.close(fd)
        raise OSError(errno.EAGAIN, "cannot create a work folder", str(dest))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)


def _open_dir(path: Path) -> int | None:
    if sys.platform == "win32":
        return None  # directories cannot be opened there; no locking (see _try_lock)
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _same_file(path: Path, fd: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _clean_stale(dest: Path) -> None:
    """Delete work folders of extractions whose process died (nobody holds their lock)."""
    if sys.platform == "win32":
        return
    try:
        entries = [e for e in os.scandir(dest) if e.name.startswith(WORK_PREFIX)]
    except OSError:
        return
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if _try_lock(fd) and _same_file(Path(entry.path), fd):
                shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)


# --- renames --------------------------------------------------------------------------------


def _load_renameat2() -> Any:
    if sys.platform != "linux":
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no such symbol: glibc < 2.28, some musl builds
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


#: Linux renameat2(2), or None.  A constant: resolved once, at import.
_RENAMEAT2: Any = _load_renameat2()


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``: True if done, False if unsupported (fall back).

    RENAME_EXCHANGE swaps two paths in one step, so a reader of dest/<target> sees the whole
    old result or the whole new one, never nothing; RENAME_NOREPLACE fails rather than replace
    something that appeared at dest/<target> meanwhile.
    """
    func = _RENAMEAT2
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL):  # old kernel, or a file system without the flag
        return False
    raise OSError(err, os.strerror(err), str(dst))


# --- the extraction proper ------------------------------------------------------------------


class _Job:
    """One extraction into ``root``: checks, counts, writes.  Not shared between threads."""

    def __init__(
        self,
        root: Path,
        name: str,
        archive_size: int,
        limits: ExtractLimits,
        cancel: threading.Event | None,
        progress: Callable[[int, int | None], None] | None,
    ) -> None:
        self.root = root
        self.name = name
        self.limits = limits
        self.cancel = cancel
        self.progress = progress
        self.archive_size = archive_size
        ratio_cap = limits.max_ratio * max(archive_size, _RATIO_FLOOR)
        self.cap = min(float(limits.max_bytes), ratio_cap)
        self.total: int | None = None
        self.written = 0
        self.members = 0
        self._reported = (-1, 0.0)
        #: Folders known to exist (as real folders) under root.
        self._made: set[tuple[str, ...]] = {()}
        #: Folder members: mode and mtime, applied once everything is inside them.
        self._dirs: dict[tuple[str, ...], tuple[int, float | None]] = {}
        #: Symlink members in archive order, created after every file and folder.
        self._links: dict[tuple[str, ...], str] = {}

    # -- errors, limits, progress --

    def fail(self, reason: str) -> NoReturn:
        raise ExtractionError(f"cannot extract {_show(self.name)}: {reason}")

    def unsafe(self, member: str, reason: str) -> NoReturn:
        self.fail(f"unsafe member {_show(member)}: {reason}")

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise ExtractCancelled(f"extraction of {_show(self.name)} cancelled")

    def count_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            self.too_many_members()

    def too_many_members(self) -> NoReturn:
        self.fail(
            f"it has more than {self.limits.max_members:,} files and folders "
            f"(ExtractLimits.max_members={self.limits.max_members}); raise it if you "
            f"trust this archive"
        )

    def check_bytes(self, more: int) -> None:
        """Refuse before writing ``more`` bytes that would pass a limit."""
        if self.written + more <= self.cap:
            return
        limits = self.limits
        if limits.max_bytes <= self.cap:
            self.fail(
                f"it expands to more than {_human(limits.max_bytes)} "
                f"(ExtractLimits.max_bytes={limits.max_bytes}); raise it if you trust this archive"
            )
        self.fail(
            f"it expands to more than {limits.max_ratio:g} times its size ({_human(self.cap)} "
            f"from {_human(self.archive_size)}), like a decompression bomb "
            f"(ExtractLimits.max_ratio={limits.max_ratio:g}); raise it if you trust this archive"
        )

    def report(self, *, force: bool = False) -> None:
        if self.progress is None:
            return
        last_bytes, last_time = self._reported
        now = time.monotonic()
        if (
            force
            or self.written - last_bytes >= MiB
            or (self.written != last_bytes and now - last_time >= _PROGRESS_SECONDS)
        ):
            self._reported = (self.written, now)
            self.progress(self.written, self.total)

    def copy(self, read: Callable[[int], bytes], fd: int) -> None:
        """Stream ``read`` into ``fd``, counting, checking the limits and the cancel event."""
        with os.fdopen(fd, "wb", closefd=False) as out:
            while True:
                self.check_cancel()
                try:
                    chunk = read(_CHUNK)
                except _DECODE_ERRORS as exc:
                    self.fail(f"the archive is broken: {_reason(exc)}")
                if not chunk:
                    break
                self.check_bytes(len(chunk))
                out.write(chunk)
                self.written += len(chunk)
                self.report()

    # -- members --

    def path_of(self, parts: tuple[str, ...]) -> Path:
        return self.root.joinpath(*parts)

    def _no_link_on_the_way(self, member: str, parts: tuple[str, ...]) -> None:
        if not self._links:
            return
        for end in range(1, len(parts) + 1):
            if parts[:end] in self._links:
                where = "/".join(parts[:end])
                if end == len(parts):
                    self.unsafe(member, f"it would replace the symlink {_show(where)}")
                self.unsafe(member, f"it is written through the symlink {_show(where)}")

    def _parents(self, member: str, parts: tuple[str, ...]) -> None:
        for end in range(1, len(parts)):
            prefix = parts[:end]
            if prefix in self._made:
                continue
            path = self.path_of(prefix)
            try:
                os.mkdir(path)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    self.unsafe(member, f"{_show('/'.join(prefix))} is a file, not a folder")
            self._made.add(prefix)

    def _clear(self, member: str, path: Path) -> None:
        """Let a later member with the same name win, as tar does, unless it is a folder."""
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(path).st_mode):
                self.unsafe(member, "a folder of the same name is in the archive too")
            os.unlink(path)

    def add_dir(self, member: str, parts: tuple[str, ...], mode: int, mtime: float | None) -> None:
        self._no_link_on_the_way(member, parts)
        if not parts:
            return  # "./": the root itself
        self._parents(member, parts)
        path = self.path_of(parts)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                self.unsafe(member, "a file of the same name is in the archive too")
        self._made.add(parts)
        # Owner rwx always: a later run must be able to delete or replace the result.
        self._dirs[parts] = ((mode & 0o755) | 0o700, mtime)

    def add_file(
        self,
        member: str,
        parts: tuple[str, ...],
        read: Callable[[int], bytes],
        mode: int,
        mtime: float | None,
        declared: int,
    ) -> None:
        if not parts:
            self.unsafe(member, "a file without a name")
        self._no_link_on_the_way(member, parts)
        self.check_bytes(declared)  # fail fast on an honest bomb; the copy counts anyway
        self._parents(member, parts)
        path = self.path_of(parts)
        self._clear(member, path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            self.copy(read, fd)
            os.chmod(fd if os.chmod in os.supports_fd else path, _file_mode(mode))
        finally:
            os.close(fd)
        _set_mtime(path, mtime)
        self.report()

    def add_hardlink(self, member: str, parts: tuple[str, ...], target: str) -> None:
        """A hard link to a regular file extracted before it (tar's only kind of hard link)."""
        if not parts:
            self.unsafe(member, "a hard link without a name")
        source = self.hardlink_source(member, target)
        self._no_link_on_the_way(member, parts)
        if any(source[:end] in self._links for end in range(1, len(source) + 1)):
            self.unsafe(member, f"hard link to or through the symlink {_show(target)}")
        try:
            is_file = stat.S_ISREG(os.lstat(self.path_of(source)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            is_file = False
        if not is_file:
            self.unsafe(member, f"hard link to {_show(target)}, not a file extracted before it")
        self._parents(member, parts)
        path = self.path_of(parts)
        if path == self.path_of(source):
            return
        self._clear(member, path)
        os.link(self.path_of(source), path, follow_symlinks=False)

    def hardlink_source(self, member: str, target: str) -> tuple[str, ...]:
        try:
            source = _safe_parts(target, backslash_is_separator=False)
        except _Unsafe as exc:
            self.unsafe(member, f"hard link to {_show(target)}: {exc}")
        if not source:
            self.unsafe(member, "a hard link to the folder itself")
        return source

    def add_symlink(self, member: str, parts: tuple[str, ...], target: str) -> None:
        """Remember a symlink; it is created by ``finish`` once nothing else will be written."""
        if not parts:
            self.unsafe(member, "a symlink without a name")
        self._no_link_on_the_way(member, parts)
        if not target or "\x00" in target:
            self.unsafe(member, "a symlink with an empty target")
        if target.startswith("/") or _has_drive(target):
            self.unsafe(member, f"symlink to the absolute path {_show(target)}")
        if "\\" in target:  # a separator on Windows, where the result may be copied
            self.unsafe(member, f"backslash in the symlink target {_show(target)}")
        depth = len(parts) - 1
        for part in target.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    self.unsafe(member, f"symlink to {_show(target)}, outside the folder")
            elif part not in ("", "."):
                depth += 1
        if parts in self._made:
            self.unsafe(member, "a folder of the same name is in the archive too")
        self._links[parts] = target

    def finish(self) -> None:
        """Create the symlinks, prove each resolves inside, then set the folders' modes."""
        for parts, target in self._links.items():
            self.check_cancel()
            member = "/".join(parts)
            self._parents(member, parts)
            try:
                os.symlink(target, self.path_of(parts))
            except FileExistsError:
                self.unsafe(member, "a symlink over another member of the same name")
        for parts in self._links:
            if not _resolves_inside(self.root, parts):
                self.unsafe(
                    "/".join(parts), "the symlink leads outside the folder (through other links)"
                )
        # Deepest first: a read-only folder must not stop us from setting its children.
        for parts, (mode, mtime) in sorted(self._dirs.items(), key=lambda i: -len(i[0])):
            path = self.path_of(parts)
            os.chmod(path, mode)
            _set_mtime(path, mtime)
        self.report(force=True)


class _Unsafe(Exception):
    """A member name that could land outside its folder (internal)."""


def _has_drive(name: str) -> bool:
    return len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha()


def _safe_parts(name: str, *, backslash_is_separator: bool) -> tuple[str, ...]:
    """The path components of a member name, or ``_Unsafe`` if it could leave its folder.

    Strict on purpose: ``a/../b`` stays inside but is refused too, since legit archives never
    need it.  A zip's backslashes are separators (old Windows tools wrote them); in a tar a
    backslash has no business in a name and is refused.
    """
    if "\x00" in name:
        raise _Unsafe("NUL in the name")
    if "\\" in name:
        if not backslash_is_separator:
            raise _Unsafe("backslash in the name")
        name = name.replace("\\", "/")
    if name.startswith("/"):
        raise _Unsafe("absolute path")
    if _has_drive(name):
        raise _Unsafe("Windows drive letter")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _Unsafe("'..' in the path")
    return parts


def _resolves_inside(root: Path, parts: tuple[str, ...]) -> bool:
    """Whether ``root/parts`` resolves inside ``root`` when every symlink on the way is followed.

    Done step by step with lstat and readlink; anything odd (a loop, too many hops, an absolute
    link, an unreadable step) counts as outside.
    """
    stack: list[str] = []
    todo = list(reversed(parts))
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return False
            stack.pop()
            continue
        stack.append(part)
        path = root.joinpath(*stack)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # dangling so far: keep checking the rest by its text
        except OSError:
            return False
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            target = os.readlink(path)
            if hops > _MAX_LINK_HOPS or target.startswith("/"):
                return False
            stack.pop()
            todo.extend(reversed(target.split("/")))
    return True


def _file_mode(mode: int) -> int:
    """As tarfile's data filter: no setuid/setgid/sticky, no group/other write, owner rw."""
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _set_mtime(path: Path, mtime: float | None) -> None:
    if mtime is None:
        return
    # A hostile or odd timestamp (negative, year 30000) is not worth failing over.
    with contextlib.suppress(OSError, OverflowError, ValueError):
        os.utime(path, (mtime, mtime), follow_symlinks=False)


class _TarSource:
    """The decompressed tar stream, as tarfile reads it: checks cancel and header sizes."""

    def __init__(self, stream: _Stream, job: _Job) -> None:
        self._stream = stream
        self._job = job
        self._since_mark = 0

    def mark(self) -> None:
        self._since_mark = 0

    def read(self, size: int = -1) -> bytes:
        self._job.check_cancel()
        data = self._stream.read(size)
        self._since_mark += len(data)
        if self._since_mark > _MAX_TAR_HEADER + 2 * _CHUNK:
            self._job.fail(f"a tar header is larger than {_human(_MAX_TAR_HEADER)}")
        return data


def _extract_tar(stream: _Stream, job: _Job) -> None:
    source = _TarSource(stream, job)
    data_filter = getattr(tarfile, "data_filter", None)  # Python 3.11.4+
    with _open_tar(source, job) as tar:
        while True:
            job.check_cancel()
            source.mark()
            try:
                member = tar.next()
            except _DECODE_ERRORS as exc:
                job.fail(f"the archive is broken: {_reason(exc)}")
            if member is None:
                break
            # tarfile keeps every member it has read (1M members: ~1 GB); a stream needs none
            # back.  `members` is a plain attribute of every TarFile, absent from typeshed.
            tar.members.clear()  # type: ignore[attr-defined]
            job.count_member()
            _extract_tar_member(tar, member, source, job, data_filter)
    job.finish()


def _open_tar(source: _TarSource, job: _Job) -> tarfile.TarFile:
    try:
        # "r|": a stream read once, front to back; no seeking back into a decompressor.
        return tarfile.open(fileobj=source, mode="r|")  # type: ignore[call-overload,no-any-return]
    except _DECODE_ERRORS as exc:
        job.fail(f"the archive is broken: {_reason(exc)}")


def _extract_tar_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    source: _TarSource,
    job: _Job,
    data_filter: Any,
) -> None:
    name = member.name
    try:
        parts = _safe_parts(name, backslash_is_separator=False)
    except _Unsafe as exc:
        job.unsafe(name, str(exc))
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        job.unsafe(name, "a device file, fifo or unknown type")
    if member.issym():
        job.add_symlink(name, parts, member.linkname)  # checks it; makes it at the very end
    elif member.islnk():
        job.hardlink_source(name, member.linkname)
    if data_filter is not None:
        # A second opinion on every member: tarfile's own rules for data archives (PEP 706).
        try:
            data_filter(member, str(job.root))
        except (tarfile.FilterError, ValueError, OSError) as exc:
            job.unsafe(name, f"refused by tarfile's data filter: {_reason(exc)}")
    mtime = float(member.mtime) if isinstance(member.mtime, int | float) else None
    if member.isdir():
        job.add_dir(name, parts, member.mode, mtime)
    elif member.issym():
        pass  # recorded above
    elif member.islnk():
        job.add_hardlink(name, parts, member.linkname)
    else:
        data = tar.extractfile(member)
        if data is None:  # pragma: no cover - tarfile returns a reader for regular files
            job.unsafe(name, "no data")

        def read(size: int) -> bytes:
            source.mark()
            return data.read(size)

        job.add_file(name, parts, read, member.mode, mtime, member.size)


def _extract_zip(file: IO[bytes], job: _Job) -> None:
    try:
        archive = zipfile.ZipFile(file)
    except _DECODE_ERRORS as exc:
        job.fail(f"the archive is broken: {_reason(exc)}")
    with archive:
        infos = archive.infolist()
        job.total = sum(info.file_size for info in infos)
        if len(infos) > job.limits.max_members:
            job.too_many_members()
        job.check_bytes(job.total)  # what it declares is already too much: fail at once
        for info in infos:
            job.check_cancel()
            job.count_member()
            _extract_zip_member(archive, info, job)
    job.finish()


def _extract_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, job: _Job) -> None:
    name = info.filename
    try:
        parts = _safe_parts(name, backslash_is_separator=True)
    except _Unsafe as exc:
        job.unsafe(name, str(exc))
    if info.flag_bits & 0x1:
        job.unsafe(name, "encrypted (nbdl extracts no encrypted zips)")
    # Unix mode bits are in the high 16 bits of external_attr when made on Unix (3).
    unix = info.external_attr >> 16 if info.create_system == 3 else 0
    kind = stat.S_IFMT(unix)
    mtime = _zip_mtime(info)
    if info.is_dir() or kind == stat.S_IFDIR:
        job.add_dir(name, parts, unix & 0o7777 or 0o755, mtime)
        return
    if kind not in (0, stat.S_IFREG, stat.S_IFLNK):
        job.unsafe(name, "a device file, fifo or unknown type")
    try:
        data = archive.open(info)
        # Symlinks are made like a tar's, with the same checks (as unzip does).
        raw = data.read(4 * KiB + 1) if kind == stat.S_IFLNK else b""
    except _DECODE_ERRORS as exc:
        job.fail(f"the archive is broken: {_reason(exc)}")
    with data:
        if kind != stat.S_IFLNK:
            job.add_file(name, parts, data.read, unix & 0o7777 or 0o644, mtime, info.file_size)
        elif len(raw) > 4 * KiB:
            job.unsafe(name, "a symlink target longer than 4 KiB")
        else:
            job.add_symlink(name, parts, raw.decode("utf-8", "surrogateescape"))


def _zip_mtime(info: zipfile.ZipInfo) -> float | None:
    try:
        return time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _extract_stream(stream: _Stream, out: Path, job: _Job) -> None:
    job.count_member()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(out, flags, 0o666)  # the umask decides, as for any new file
    try:
        job.copy(stream.read, fd)
    finally:
        os.close(fd)
    job.report(force=True)


def _build(fmt: str, file: IO[bytes], out: Path, job: _Job) -> None:
    """Extract the open archive into ``out`` (a folder, or a file for single-file formats)."""
    if fmt == "zip":
        os.mkdir(out)
        _extract_zip(file, job)
        return
    stream: _Stream = file if fmt == "tar" else _decompressor(fmt.removeprefix("tar."), file)
    try:
        if fmt in _STREAM_FORMATS:
            _extract_stream(stream, out, job)
        else:
            os.mkdir(out)
            _extract_tar(stream, job)
    finally:
        stream.close()


# --- the public entry point -----------------------------------------------------------------


def extract(
    archive: Path,
    dest: Path,
    target: str,
    *,
    limits: ExtractLimits = ExtractLimits(),  # frozen: one shared default is safe
    cancel: threading.Event | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Extract ``archive`` into ``dest/target`` and return that path.

    ``dest/target`` is a folder for tar and zip, a file for gz, bz2, xz and zst.  If this archive
    was already extracted there, returns at once.  An earlier result of another archive (or of
    this one before it changed) is replaced whole; anything else in the way is refused.
    ``progress(done, total)`` gets the bytes written so far and the total when the archive
    declares one (zip), else None.  Raises ``ExtractionError`` with a one-line reason, or
    ``ExtractCancelled`` when ``cancel`` is set; either way nothing is left behind.
    """
    target = _check_target(target)
    archive, dest = Path(archive), Path(dest)
    name = archive.name
    final = dest / target
    try:
        (dest / STATE_DIR / MARKER_DIR).mkdir(parents=True, exist_ok=True)
        source = os.stat(archive)  # a missing archive is reported here
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(final)
            if (st.st_dev, st.st_ino) == (source.st_dev, source.st_ino):
                raise InvalidConfigError(f"extraction target {target!r} is the archive itself")
        lock = _lock_target(dest / STATE_DIR / MARKER_DIR / f"{target}.lock", cancel, name)
    except OSError as exc:
        raise ExtractionError(f"cannot extract {_show(name)} into {dest}: {_reason(exc)}") from None
    try:
        done = extracted(archive, dest, target)
        if done is not None:
            return done  # another thread or process did it while we waited for the lock
        _clean_stale(dest)
        previous = _load_marker(dest, target)
        _check_in_the_way(final, previous, name)
        work = _WorkDir(dest)
        try:
            _extract_and_install(archive, dest, target, work, previous, limits, cancel, progress)
        finally:
            work.remove()
    except OSError as exc:
        raise ExtractionError(f"cannot extract {_show(name)} into {dest}: {_reason(exc)}") from None
    finally:
        os.close(lock)
    return final


def _check_in_the_way(final: Path, previous: _Marker | None, name: str) -> os.stat_result | None:
    """The stat of dest/<target> if it is an earlier result of ours; refuse anything else."""
    try:
        st = os.lstat(final)
    except FileNotFoundError:
        return None
    if previous is None or not previous.owns(st):
        raise ExtractionError(
            f"cannot extract {_show(name)}: {final} is in the way and was not extracted by "
            f"nbdl; move it away or extract elsewhere"
        )
    return st


def _extract_and_install(
    archive: Path,
    dest: Path,
    target: str,
    work: _WorkDir,
    previous: _Marker | None,
    limits: ExtractLimits,
    cancel: threading.Event | None,
    progress: Callable[[int, int | None], None] | None,
) -> None:
    name = archive.name
    out = work.path / "out"
    with open(archive, "rb") as file:
        # The identity of the bytes we read, not of whatever the path names later.
        identity = _identity(os.fstat(file.fileno()))
        fmt = _detect(file)
        if fmt is None:
            raise ExtractionError(
                f"cannot extract {_show(name)}: not an archive nbdl knows ({', '.join(_FORMATS)})"
            )
        job = _Job(out, name, identity[0], limits, cancel, progress)
        _build(fmt, file, out, job)
    job.check_cancel()
    # Ownership is checked again: a person may have put something there meanwhile.
    old = _check_in_the_way(dest / target, previous, name)
    new = os.lstat(out)
    new_id = (new.st_dev, new.st_ino)
    old_id = None if old is None else (old.st_dev, old.st_ino)
    pending = _Marker(target, identity, fmt, old_id, new_id, complete=False)
    # The marker names the new result before it is in place, so that a kill right after the
    # rename leaves something nbdl knows as its own (and re-extracts, as it is not complete).
    _save_marker(dest, pending, name)
    _move_into_place(out, dest / target, work.path / "old", replace=old is not None, name=name)
    _save_marker(dest, _Marker(target, identity, fmt, new_id, None, complete=True), name)


def _move_into_place(out: Path, final: Path, aside: Path, *, replace: bool, name: str) -> None:
    """Rename ``out`` to ``final``; an earlier result there ends up inside the work folder.

    On Linux one renameat2 does it: RENAME_EXCHANGE swaps old and new in one step, so the old
    result stays whole until the new one is whole in its place.  Elsewhere the old result is
    first renamed aside (for an instant nothing is at ``final``: a kill then leaves no result,
    and the next run extracts again).  Both are renames within ``dest``: nothing is copied.
    """
    try:
        flags = _RENAME_EXCHANGE if replace else _RENAME_NOREPLACE
        if _renameat2(out, final, flags):
            return
    except FileExistsError:
        raise ExtractionError(
            f"cannot extract {_show(name)}: {final} appeared meanwhile and is in the way"
        ) from None
    if replace:
        os.rename(final, aside)
    elif os.path.lexists(final):
        raise ExtractionError(
            f"cannot extract {_show(name)}: {final} appeared meanwhile and is in the way"
        )
    os.rename(out, final)


# --- small helpers --------------------------------------------------------------------------


def _show(text: str, limit: int = 120) -> str:
    """A member or file name fit for a one-line message: printable, short."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return _show(first, 160)


def _human(size: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} bytes"
