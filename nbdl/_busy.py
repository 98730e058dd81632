"""Final paths that a running batch of this process is writing, so no two batches write one file.

Two batches writing the same ``.part`` file at once (a background job and a plain ``fetch`` of
the same data set, say) could splice their bytes.  Batches may run on different event loops
(``fetch_sync`` uses a thread of its own), hence a thread lock rather than an asyncio one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from ._errors import BatchConflictError
from ._naming import fold_name

_lock = threading.Lock()
_owners: dict[str, int] = {}


def _key(folder: str, name: str) -> str:
    # The name folded: two names that macOS and Windows take for one file are one file here.
    return f"{folder}{os.sep}{fold_name(name)}"


def _folder(path: Path) -> str:
    # abspath, not resolve(): no system call, and the same spelling in one process.
    return os.path.abspath(path)


def reserve(owner: object, folder: Path, names: Iterable[str]) -> None:
    """Mark the files ``names`` of ``folder`` as written by ``owner``.

    Raises ``BatchConflictError`` if another batch is writing any of them.
    """
    base = _folder(folder)
    keys = {_key(base, name): name for name in names}
    token = id(owner)
    with _lock:
        taken = sorted(k for k in keys if _owners.get(k, token) != token)
        if taken:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            raise BatchConflictError(
                f"{os.path.join(base, keys[taken[0]])}{more} is being downloaded by another "
                "batch in this process (a background job?); wait for it, or download into "
                "another folder"
            )
        for key in keys:
            _owners[key] = token


def add(owner: object, path: Path) -> bool:
    """Reserve one more path for ``owner``; False if another batch is writing it."""
    key, token = _key(_folder(path.parent), path.name), id(owner)
    with _lock:
        return _owners.setdefault(key, token) == token


def release(owner: object) -> None:
    """Forget every path of ``owner``."""
    token = id(owner)
    with _lock:
        for key in [k for k, t in _owners.items() if t == token]:
            del _owners[key]
