"""Which URL each file of a folder came from, so that a file is never taken for another URL's.

A download folder outlives one batch: two data sets may both have a ``train.csv``, and a cell may
be edited to point at another URL.  A file found complete at its final path is skipped without a
request; without a checksum, nothing but its origin tells whether it is this URL's file.  So each
completed download appends one line to ``dest/.nbdl/origins``: a key of its URL, a tab, the file's
name.  The last line of a name says where its bytes came from.

- The key is a hash of the URL without its query, fragment and user info: no token or password
  reaches the folder, and a signed URL whose signature changes on every run (S3's presigned
  URLs) still finds its own file.  URLs that differ only in their query are one origin.
- Lines are appended with ``O_APPEND`` in one ``write`` (atomic between processes on local file
  systems), after the file has its final name and before its lock is released: a process that
  waited for the lock reads the line.
- A batch keeps only the lines of its own names (memory follows the batch, not the folder), and
  reads the lines other processes append as it goes.
- No line for a name (a file put there by hand, or by a version of nbdl before this one) means
  unknown: the file is skipped as before.  A file system or a planted link that refuses the
  file leaves nbdl as it was without it; malformed lines are ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Container
from pathlib import Path

from . import _state
from ._naming import fold_name

ORIGINS_NAME = "origins"
_KEY_CHARS = 32
_CHUNK = 4 * 1024 * 1024
#: A line longer than this is not one of ours (a key, a tab and a name of at most 200 bytes).
_MAX_LINE = 1024


def origin_key(url: str) -> str:
    """The key of ``url``'s origin: its scheme, host and path, hashed (see the module's text)."""
    base = url.partition("#")[0].partition("?")[0]
    scheme, _, rest = base.partition("://")
    authority, slash, path = rest.partition("/")
    authority = authority.rpartition("@")[2]
    plain = f"{scheme.lower()}://{authority.lower()}{slash}{path}"
    return hashlib.blake2b(plain.encode(), digest_size=_KEY_CHARS // 2).hexdigest()


class Origins:
    """The origins of one folder's files, for the (folded) names in ``names``."""

    def __init__(self, dest: Path, names: Container[str]) -> None:
        self._dest = dest
        self._names = names
        self._fd: int | None = None
        self._unusable = False
        self._offset = 0
        self._known: dict[str, str] = {}

    def record(self, name: str, url: str) -> None:
        """Say that ``name`` now holds ``url``'s bytes."""
        fd = self._open()
        if fd is None:
            return
        with contextlib.suppress(OSError):  # best effort: without it the file is "unknown"
            os.write(fd, f"{origin_key(url)}\t{name}\n".encode())

    def from_elsewhere(self, name: str, url: str) -> bool:
        """True when the last download saved as ``name`` came from another URL than ``url``."""
        fd = self._open()
        if fd is None:
            return False
        with contextlib.suppress(OSError):
            self._catch_up(fd)
        key = self._known.get(fold_name(name))
        return key is not None and key != origin_key(url)

    def close(self) -> None:
        """Release the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int | None:
        if self._fd is not None or self._unusable:
            return self._fd
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            state = _state.open_state_dir(self._dest, create=True)
            try:
                self._fd = os.open(ORIGINS_NAME, flags, 0o644, dir_fd=state)
            finally:
                os.close(state)
        except OSError:  # a planted link, a read-only folder: nbdl as it was without origins
            self._unusable = True
        return self._fd

    def _catch_up(self, fd: int) -> None:
        """Read the lines appended since the last call (by this or another process)."""
        end = os.fstat(fd).st_size
        known, names = self._known, self._names
        while self._offset < end:
            data = os.pread(fd, min(_CHUNK, end - self._offset), self._offset)
            if not data:
                return
            last = data.rfind(b"\n")
            if last < 0:  # no whole line yet (or a line longer than a chunk: not ours)
                if len(data) < _CHUNK:
                    return
                self._offset += len(data)
                continue
            self._offset += last + 1
            for line in data[:last].split(b"\n"):
                if len(line) > _MAX_LINE:
                    continue
                key, tab, raw = line.partition(b"\t")
                if not tab or len(key) != _KEY_CHARS:
                    continue
                try:
                    name = fold_name(raw.decode())
                except UnicodeDecodeError:
                    continue
                if name in names:
                    known[name] = key.decode("ascii", "replace")
