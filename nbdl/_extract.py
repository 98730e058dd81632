"""Placeholder of the extraction module (being written on its own branch)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ExtractCancelled(Exception):
    """Extraction stopped because it was cancelled."""


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """Bounds on what an archive may unpack to."""

    max_bytes: int = 1 << 40
    max_ratio: float = 1000.0
    max_members: int = 1_000_000


def archive_format(path: Path) -> str | None:
    """The archive format of ``path`` by its first bytes, or None."""
    raise NotImplementedError


def default_target(name: str) -> str:
    """The name of what an archive called ``name`` extracts to."""
    raise NotImplementedError


def extracted(archive: Path, dest: Path, target: str) -> Path | None:
    """The result of an earlier extraction of this very archive, if it is still there."""
    raise NotImplementedError


def extract(
    archive: Path,
    dest: Path,
    target: str,
    *,
    limits: ExtractLimits = ExtractLimits(),
    cancel: threading.Event | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Extract ``archive`` into ``dest/target``."""
    raise NotImplementedError
