"""Small records on disk that let a later attempt, or a later run, pick up where one stopped.

Each URL downloaded into ``dest`` may have a JSON record in ``dest/.nbdl/``.  While a download
runs it holds what ``Range`` + ``If-Range`` need (validator, expected size) next to the partial
file ``dest/<name>.part``; after it completes it remains only when the file name came from the
server (``Content-Disposition``), so that a re-run finds the file without asking the server.
Records are written atomically and before the bytes they describe, so a killed process leaves
nothing that could be mistaken for more than it is.  The state folder and its records are never
reached through a link planted in ``dest`` (``O_NOFOLLOW``, descriptors relative to the folder):
whatever ``dest`` contains, nbdl writes nothing outside it.  The folder also holds the lock file
of the processes sharing ``dest`` (see ``_locks``) and the origin of each file (``_origins``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._naming import sanitize_filename

STATE_DIR = ".nbdl"
PART_SUFFIX = ".part"
_HASH_BLOCK = 1024 * 1024
#: A record is a few hundred bytes; a larger file there is not one of ours.
_MAX_RECORD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    """What is known about one URL's file in one folder."""

    url: str
    name: str
    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None
    complete: bool = False
    #: A segmented download's progress: ``[start, end, done]`` per segment (see ``_segments``).
    segments: list[list[int]] | None = None
    #: The URL the bytes came from, when it was one of the file's mirrors.
    source: str | None = None

    @property
    def strong(self) -> bool:
        """True when the record has a strong ETag, which identifies the bytes on any server."""
        return bool(self.etag) and not str(self.etag).startswith("W/")

    @property
    def validator(self) -> str | None:
        """The value for ``If-Range``: a strong ETag, else Last-Modified."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


def part_path(final: Path) -> Path:
    """Where the bytes of ``final`` accumulate until they are complete and verified."""
    return final.parent / (final.name + PART_SUFFIX)


def hash_prefix(fd: int, hasher: hashlib._Hash, length: int) -> None:
    """Feed the first ``length`` bytes of the open file ``fd`` to ``hasher`` (fewer if shorter)."""
    hash_range(fd, hasher, 0, length)


def hash_range(fd: int, hasher: hashlib._Hash, start: int, end: int) -> None:
    """Feed bytes ``start`` to ``end`` of the open file ``fd`` to ``hasher`` (fewer if shorter)."""
    position = start
    while position < end:
        block = os.pread(fd, min(_HASH_BLOCK, end - position), position)
        if not block:
            break
        hasher.update(block)
        position += len(block)


def record_name(url: str) -> str:
    """The file name of ``url``'s record in the state folder."""
    return hashlib.sha256(url.encode()).hexdigest()[:32] + ".json"


def record_path(dest: Path, url: str) -> Path:
    """The record file of ``url`` in ``dest``."""
    return dest / STATE_DIR / record_name(url)


def open_state_dir(dest: Path, *, create: bool = False) -> int:
    """A descriptor of ``dest/.nbdl``, never reached through a link planted at that name.

    With ``create`` the folder (and ``dest``) is made when missing.  Raises ``OSError``, with
    ``ENOTDIR`` when something other than a folder is in the way.
    """
    path = dest / STATE_DIR
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OSError(
                errno.ENOTDIR, "a link or a file is in the way of nbdl's state folder", str(path)
            ) from None
        raise
    dest.mkdir(parents=True, exist_ok=True)  # dest itself may be a link the user made
    with contextlib.suppress(FileExistsError):  # another process made it meanwhile
        os.mkdir(path)
    return open_state_dir(dest)


def has_records(dest: Path) -> bool:
    """True when ``dest`` may hold a record (a missing state folder holds none)."""
    try:
        fd = open_state_dir(dest)
    except OSError as exc:
        return exc.errno != errno.ENOENT
    try:
        return any(name.endswith(".json") for name in os.listdir(fd))
    finally:
        os.close(fd)


def load(dest: Path, url: str) -> Record | None:
    """The record of ``url`` in ``dest``, or None if there is none or it is unreadable."""
    try:
        state = open_state_dir(dest)
    except OSError:
        return None
    try:
        record = Record(**read_json(state, record_name(url)))
    except (OSError, ValueError, TypeError):
        return None
    finally:
        os.close(state)
    # A hash collision, or a record edited by hand, must not resume the wrong bytes; a name
    # planted in a record ("../x") must not lead a write out of dest.
    name = record.name
    if record.url != url or not isinstance(name, str) or sanitize_filename(name) != name:
        return None
    return record


def save(dest: Path, record: Record) -> None:
    """Write the record atomically (a new temporary file, then ``os.replace``)."""
    state = open_state_dir(dest, create=True)
    try:
        write_json(state, record_name(record.url), asdict(record))
    finally:
        os.close(state)


def read_json(folder: int, name: str, limit: int = _MAX_RECORD) -> Any:
    """The JSON file ``name`` in the folder descriptor ``folder``, never read through a link.

    At most ``limit`` bytes are read.  Raises ``OSError`` or ``ValueError`` (a missing,
    planted or malformed file).
    """
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    with os.fdopen(fd, "rb") as file:
        return json.loads(file.read(limit))


def write_json(folder: int, name: str, data: object) -> None:
    """Write ``data`` as the JSON file ``name`` in the folder descriptor ``folder``, atomically."""
    # A fresh random name, created exclusively and never through a link: a file planted at a
    # predictable name cannot redirect the write.
    tmp = f"{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(json.dumps(data).encode())
        # A link planted at the final name is replaced, never written through.
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        raise


def delete(dest: Path, url: str) -> None:
    """Forget ``url``'s record, if any."""
    try:
        state = open_state_dir(dest)
    except OSError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record_name(url), dir_fd=state)
    finally:
        os.close(state)
