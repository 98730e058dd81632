"""Small records on disk that let a later attempt, or a later run, pick up where one stopped.

Each URL downloaded into ``dest`` may have a JSON record in ``dest/.nbdl/``.  While a download
runs it holds what ``Range`` + ``If-Range`` need (validator, expected size) next to the partial
file ``dest/<name>.part``; after it completes it remains only when the file name came from the
server (``Content-Disposition``), so that a re-run finds the file without asking the server.
Records are written atomically and before the bytes they describe, so a killed process leaves
nothing that could be mistaken for more than it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_DIR = ".nbdl"
PART_SUFFIX = ".part"
_HASH_BLOCK = 1024 * 1024


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
    position = 0
    while position < length:
        block = os.pread(fd, min(_HASH_BLOCK, length - position), position)
        if not block:
            break
        hasher.update(block)
        position += len(block)


def record_path(dest: Path, url: str) -> Path:
    """The record file of ``url`` in ``dest``."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:32]
    return dest / STATE_DIR / f"{digest}.json"


def load(dest: Path, url: str) -> Record | None:
    """The record of ``url`` in ``dest``, or None if there is none or it is unreadable."""
    try:
        data = json.loads(record_path(dest, url).read_text("utf-8"))
        record = Record(**data)
    except (OSError, ValueError, TypeError):
        return None
    # A hash collision, or a record edited by hand, must not resume the wrong bytes.
    return record if record.url == url and isinstance(record.name, str) else None


def save(dest: Path, record: Record) -> None:
    """Write the record atomically (a temporary file, then ``os.replace``)."""
    path = record_path(dest, record.url)
    path.parent.mkdir(parents=True, exist_ok=True)  # dest too: the worker makes it lazily
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(record)), "utf-8")
    os.replace(tmp, path)


def delete(dest: Path, url: str) -> None:
    """Forget ``url``'s record, if any."""
    with contextlib.suppress(FileNotFoundError):
        record_path(dest, url).unlink()
