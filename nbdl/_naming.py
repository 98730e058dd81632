"""Where a download lands: the file name from config, Content-Disposition or the URL, made safe."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

from yarl import URL

from ._urls import SIMPLE_URL

#: Names Windows reserves; refusing them everywhere keeps a download folder portable.
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_MAX_NAME_BYTES = 200  # leaves room for ".part" and ".json" under the usual 255-byte limit
#: Names that the rules below leave as they are (most names from URLs): checked in one step.
_PLAIN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{_MAX_NAME_BYTES - 1}}}")


def sanitize_filename(name: str) -> str:
    """A name that stays inside its folder: no separators, no ``..``, no control characters.

    Returns ``""`` when nothing usable is left.
    """
    if (
        _PLAIN.fullmatch(name)
        and not name.endswith(".")
        and name.split(".")[0].lower() not in _RESERVED
    ):
        return name
    return _sanitize(name)


def _sanitize(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    # The last path component is what a server or URL meant by the name; earlier ones are where
    # an attacker would try to put it.
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name)
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"))
    name = name.strip().strip(".").strip()
    if not name or set(name) <= {"_", "."}:
        return ""
    if name.split(".")[0].lower() in _RESERVED:
        name = f"_{name}"
    while len(name.encode()) > _MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        keep_ext = dot and 0 < len(ext) <= 16 and stem
        name = f"{stem[:-1]}.{ext}" if keep_ext else name[:-1]
    return name


def check_explicit_filename(name: object) -> str:
    """Validate a ``FileConfig.filename``: a plain name, used as given."""
    if not isinstance(name, str):
        raise ValueError(f"filename must be a string, not {type(name).__name__}")
    if name != sanitize_filename(name):
        raise ValueError(
            f"filename {name!r} is not a plain file name (no folders, '..', control or "
            f"reserved characters); try {sanitize_filename(name) or 'another name'!r}"
        )
    return name


def name_from_url(url: str) -> str:
    """The last path segment, percent-decoded, without query or fragment; ``""`` if none."""
    match = SIMPLE_URL.fullmatch(url)
    return _name_from_path((match[2] or "") if match else URL(url, encoded=True).raw_path)


def _name_from_path(path: str) -> str:
    segment = path.rstrip("/").rsplit("/", 1)[-1]
    return sanitize_filename(unquote(segment, errors="replace"))


def fallback_name(url: str) -> str:
    """A name for a URL whose path says nothing, such as ``https://example.org/``."""
    host = URL(url).host or "download"
    return sanitize_filename(f"{host}.download") or "download"
