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


def _key(path: Path) -> str:
    # abspath, not resolve(): no system call per file, and the same spelling in one process.
    # The name folded: two names that macOS and Windows take for one file are one file here.
    folder, sep, name = os.path.abspath(path).rpartition(os.sep)
    return f"{folder}{sep}{fold_name(name)}"


def reserve(owner: object, paths: Iterable[Path]) -> None:
    """Mark ``paths`` as written by ``owner``; raise if another batch is writing any of them."""
    keys = {_key(p) for p in paths}
    token = id(owner)
    with _lock:
        taken = sorted(k for k in keys if _owners.get(k, token) != token)
        if taken:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            raise BatchConflictError(
                f"{taken[0]}{more} is being downloaded by another batch in this process "
                "(a background job?); wait for it, or download into another folder"
            )
        for key in keys:
            _owners[key] = token


def add(owner: object, path: Path) -> bool:
    """Reserve one more path for ``owner``; False if another batch is writing it."""
    key, token = _key(path), id(owner)
    with _lock:
        return _owners.setdefault(key, token) == token


def release(owner: object) -> None:
    """Forget every path of ``owner``."""
    token = id(owner)
    with _lock:
        for key in [k for k, t in _owners.items() if t == token]:
            del _owners[key]
