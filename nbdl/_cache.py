"""``nbdl.cache_dir``: where a project keeps its downloads between sessions."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import InvalidConfigError
from ._naming import check_explicit_filename

__all__ = ["CACHE_ENV", "cache_dir"]

#: Set, it replaces the platform's cache folder for every name (a shared disk, a CI cache).
CACHE_ENV = "NBDL_CACHE_DIR"


def cache_dir(name: str) -> Path:
    r"""The user cache folder for ``name``; it is not created (``fetch`` creates its ``dest``).

    ``$NBDL_CACHE_DIR/name`` when that variable is set and not empty; else the platform's user
    cache folder: ``$XDG_CACHE_HOME/name`` or ``~/.cache/name`` on Linux,
    ``~/Library/Caches/name`` on macOS, ``%LOCALAPPDATA%\name\Cache`` on Windows.  ``name``
    must be a plain name (no folders); anything else raises ``InvalidConfigError``.
    """
    try:
        # check_explicit_filename lets "" through, and "" would mean the cache root itself.
        if name == "":
            raise ValueError("the name is empty")
        check_explicit_filename(name)
    except ValueError as exc:
        raise InvalidConfigError(f"cache_dir: {exc}") from None
    root = os.environ.get(CACHE_ENV, "").strip()
    if root:
        # Absolute now, so that the folder does not move if the process changes directory.
        return Path(root).expanduser().absolute() / name
    # Loaded here: ~10 ms that every other start-up (each CLI run, say) would pay for nothing.
    import platformdirs

    # appauthor=False: on Windows the default would repeat the name (LOCALAPPDATA\name\name).
    return Path(platformdirs.user_cache_dir(name, appauthor=False))
