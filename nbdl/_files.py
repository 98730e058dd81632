"""Opening and replacing files inside a download folder, never through what is planted there.

Every path nbdl writes is ``dest/<plain name>`` (or inside ``dest/.nbdl``), so refusing to
follow a link at the last component is enough to keep every write inside ``dest``; ``dest``
itself may be a link the user made.  A hard link planted at a partial path would let a write
reach a file elsewhere on the same file system, so a partial file must have exactly one name.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ._errors import FileSystemError


def in_the_way(path: str | os.PathLike[str], what: str) -> FileSystemError:
    """The error for something that is not a plain file of ours at ``path``."""
    return FileSystemError(
        f"cannot write {os.fspath(path)}: {what} is in the way (nbdl never writes through "
        "links or over folders in dest; remove it to download this file)"
    )


def open_part(part: str | os.PathLike[str], dest: Path, *, resume: bool) -> int:
    """The partial file, open for reading and writing, emptied unless ``resume``.

    Makes ``dest`` if it was removed.  Raises ``OSError`` for the file system's errors and
    ``FileSystemError`` for a link, a folder or a multiply-linked file at ``part``.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = open_in(dest, part, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise in_the_way(part, "a symbolic link") from None
        if exc.errno == errno.EISDIR:
            raise in_the_way(part, "a folder") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise in_the_way(part, "something other than a file")
        if info.st_nlink != 1:
            raise in_the_way(part, "a file with another name (a hard link)")
        if not resume and info.st_size:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_in(dest: Path, path: str | os.PathLike[str], flags: int) -> int:
    """``os.open`` of a file in ``dest``, making ``dest`` again if it was removed meanwhile."""
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        dest.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o666)


def check_final(final: str | os.PathLike[str]) -> None:
    """Raise unless ``final`` is free or a plain file that may be replaced."""
    try:
        info = os.lstat(final)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise in_the_way(final, "a symbolic link")
    if not stat.S_ISREG(info.st_mode):
        raise in_the_way(final, "a folder" if stat.S_ISDIR(info.st_mode) else "a special file")


def open_final(final: str | os.PathLike[str]) -> int:
    """The complete file at ``final`` for reading, never through a link."""
    try:
        return os.open(final, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise in_the_way(final, "a symbolic link") from None
        raise
