"""Locks that keep processes sharing a download folder from writing the same file at once.

Each folder has one lock file, ``dest/.nbdl/lock``; a file is locked by a POSIX record lock
(``fcntl.lockf``) on one byte of it, at an offset derived from the file's name.  The operating
system drops these locks when the process that holds them dies, so a ``kill -9`` never leaves a
stale lock (huggingface_hub's lock files hang their peers forever after a crash): a process
waiting for the file takes over at once and resumes from the bytes already on disk.

One byte per file in one file, rather than a lock file per download, costs no file creation
(about 0.6 ms on ext4, more than a small file's whole download).  The lock file is never deleted:
deleting a lock file races with a process that has just opened it.

POSIX record locks belong to the process, not to a descriptor, and closing *any* descriptor of
the lock file drops all of the process's locks on it; so each lock file is opened once per
process and never closed.  Within one process, ``_busy`` already keeps two batches off one file;
here a count per byte keeps two names that hash to the same byte from unlocking each other.

File systems without working locks (some network mounts: NFS without ``lockd``, some FUSE file
systems) refuse the lock with ``ENOLCK``/``EOPNOTSUPP``; then the folder is used unlocked, with a
warning once per folder, as before this module existed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import stat
import threading
from pathlib import Path

from . import _state
from ._naming import fold_name

logger = logging.getLogger("nbdl")

LOCK_NAME = "lock"
#: Errors of a file system that has no working record locks.
_UNSUPPORTED = frozenset(
    {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EBADF}
    | ({errno.ENOTSUP} if hasattr(errno, "ENOTSUP") else set())
)
#: Errors of a lock held by another process.
_BUSY = frozenset({errno.EACCES, errno.EAGAIN})

_guard = threading.Lock()
#: Lock file (device, inode) -> its FolderLocks, for the life of the process (see above).
_folders: dict[tuple[int, int], FolderLocks] = {}
#: Descriptors of lock files opened twice by racing threads: never closed (see above).
_spare: list[int] = []
#: A byte beyond every name's offset (56 bits), for probing whether locks work.
_PROBE = 1 << 60
#: Folders already warned about.
_warned: set[str] = set()


class FolderLocks:
    """The locks of one folder's files, for this process."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._held: dict[int, int] = {}

    @staticmethod
    def _offset(name: str) -> int:
        # 56 bits: collisions are negligible, and the offset stays far below off_t's limit.  The
        # name folded: names that macOS and Windows take for one file take one lock.
        key = fold_name(name).encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=7).digest(), "big")

    def try_lock(self, name: str) -> bool:
        """Lock ``name`` for this process; False if another process holds it."""
        offset = self._offset(name)
        with _guard:
            if offset in self._held:
                self._held[offset] += 1
                return True
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
            except OSError as exc:
                if exc.errno in _BUSY:
                    return False
                raise
            self._held[offset] = 1
            return True

    def unlock(self, name: str) -> None:
        """Release one hold of ``name``."""
        offset = self._offset(name)
        with _guard:
            count = self._held.get(offset, 0)
            if count > 1:
                self._held[offset] = count - 1
                return
            if count == 1:
                del self._held[offset]
                try:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset, os.SEEK_SET)
                except OSError:  # the process ending releases it anyway
                    logger.debug("nbdl: unlocking %s failed", name, exc_info=True)


def for_folder(dest: Path) -> FolderLocks | None:
    """The locks of ``dest`` (making its state folder and lock file), or None without locks.

    Raises ``OSError`` when the lock file cannot be made (the caller reports the file error).
    """
    state = _state.open_state_dir(dest, create=True)
    try:
        try:
            seen = os.stat(LOCK_NAME, dir_fd=state, follow_symlinks=False)
        except FileNotFoundError:
            seen = None
        if seen is not None and stat.S_ISREG(seen.st_mode):
            with _guard:
                known = _folders.get((seen.st_dev, seen.st_ino))
            if known is not None:  # no second descriptor: closing it would drop our locks
                return known
        fd = _open_lock_file(state)
    finally:
        os.close(state)
    info = os.fstat(fd)
    key = (info.st_dev, info.st_ino)
    with _guard:
        known = _folders.get(key)
        if known is not None:  # another thread opened it meanwhile: keep both open (see above)
            _spare.append(fd)
            return known
    try:
        # A probe on a byte no name uses tells whether the file system has record locks.
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _PROBE, os.SEEK_SET)
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _PROBE, os.SEEK_SET)
    except OSError as exc:
        if exc.errno not in _BUSY:  # busy: another process is probing, so locks work
            os.close(fd)  # this process holds no lock on this file yet: closing drops nothing
            if exc.errno in _UNSUPPORTED:
                _warn_unlocked(dest, exc)
                return None
            raise
    with _guard:
        known = _folders.get(key)
        if known is not None:
            _spare.append(fd)
            return known
        locks = _folders[key] = FolderLocks(fd)
    return locks


def _open_lock_file(state: int) -> int:
    """The lock file in the state folder ``state`` (a descriptor), never through a link."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(2):
        try:
            fd = os.open(LOCK_NAME, flags, 0o644, dir_fd=state)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # A link planted in nbdl's own folder: not ours to follow; ours to replace.
            os.unlink(LOCK_NAME, dir_fd=state)
            continue
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
        break
    raise OSError(errno.EEXIST, "the lock file is not a regular file", LOCK_NAME)


def _warn_unlocked(dest: Path, exc: OSError) -> None:
    key = str(dest)
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(
        "nbdl: %s has no working file locks (%s); processes sharing this folder are not "
        "coordinated (see the README: 'Several processes, one folder')",
        dest,
        exc.strerror or exc,
    )
