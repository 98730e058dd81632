"""Where a download lands: the file name from config, Content-Disposition or the URL, made safe."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

from yarl import URL

from ._urls import SIMPLE_URL

#: Names Windows reserves (devices, as its docs and CPython's ``ntpath.isreserved`` list them):
#: refusing them everywhere keeps a download folder portable.
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{port}{n}" for port in ("com", "lpt") for n in "0123456789\u00b9\u00b2\u00b3"}
)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
#: Windows drops trailing dots and spaces, and a leading dot hides a file (or names ours, .nbdl).
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")
_MAX_NAME_BYTES = 200  # leaves room for ".part" and ".json" under the usual 255-byte limit
#: Names that the rules below leave as they are (most names from URLs): checked in one step.
_PLAIN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{_MAX_NAME_BYTES - 1}}}")
#: The suffix of partial files (``_state.PART_SUFFIX``): a final name ending so could be the
#: partial file of another download of the batch, so the dot becomes "_" ("a.part" → "a_part").
_PART = ".part"


def sanitize_filename(name: str) -> str:
    """A name that stays inside its folder: no separators, no ``..``, no control characters.

    Returns ``""`` when nothing usable is left.
    """
    if _PLAIN.fullmatch(name) and not name.endswith(".") and not _needs_mark(name):
        return name
    return _sanitize(name)


def _needs_mark(name: str) -> bool:
    # A device (Windows ignores spaces before the extension: "nul .txt" is one), or a name that
    # could be the partial file of another download.
    stem = name.split(".", 1)[0].rstrip(" ").lower()
    return stem in _RESERVED or name[-len(_PART) :].lower() == _PART


def _sanitize(name: str) -> str:
    if any("\ud800" <= ch <= "\udfff" for ch in name):
        name = _undo_surrogates(name)
    name = unicodedata.normalize("NFC", name)
    # The last path component is what a server or URL meant by the name; earlier ones are where
    # an attacker would try to put it.
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name)
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"))
    name = _shorten(_EDGES.sub("", name))
    if not name or set(name) <= {"_", "."}:
        return ""
    name = _unpart(name)
    if _needs_mark(name):
        # Shortening again may cut the name back to one ending in ".part" (never to a device).
        name = _unpart(_shorten(f"_{name}"))
    return name


def _unpart(name: str) -> str:
    if name.lower().endswith(_PART):
        return f"{name[: -len(_PART)]}_{name[-len(_PART) + 1 :]}"
    return name


def _undo_surrogates(name: str) -> str:
    """Text for the bytes of a header that were not UTF-8 (aiohttp keeps them as surrogates)."""
    try:
        # Such bytes are nearly always Latin-1, what HTTP headers were once defined to carry.
        return name.encode("utf-8", "surrogateescape").decode("latin-1")
    except UnicodeEncodeError:  # surrogates no byte explains (from JSON, say): drop them
        return "".join(ch for ch in name if not "\ud800" <= ch <= "\udfff")


def _shorten(name: str) -> str:
    """``name`` cut to ``_MAX_NAME_BYTES`` of UTF-8, keeping a short extension."""
    data = name.encode()
    if len(data) <= _MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and stem and 0 < len(ext) <= 16:
        room = _MAX_NAME_BYTES - len(ext.encode()) - 1
        return f"{stem.encode()[:room].decode(errors='ignore')}.{ext}"
    return _EDGES.sub("", data[:_MAX_NAME_BYTES].decode(errors="ignore"))


def fold_name(name: str) -> str:
    """``name`` as macOS and Windows compare names: case ignored, and accents however composed.

    Two names of one batch that fold alike are one file there (the second download would
    replace the first, and a re-run would take one URL's file for the other's), so a batch
    refuses them everywhere: a download cell must mean the same on every machine it runs on.
    Unicode case folding joins a little more than either system does (``ß`` and ``ss``): on
    that side an error asks for a rename, on the other a file would be lost.
    """
    if name.isascii():
        return name.lower()
    # Unicode's canonical caseless match: decomposed, folded, decomposed again.
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def check_explicit_filename(name: object) -> str:
    """Validate a ``FileConfig.filename``: a plain name, used as given."""
    if not isinstance(name, str):
        raise ValueError(f"filename must be a string, not {type(name).__name__}")
    if not name:  # "" would make the download folder itself the file
        raise ValueError("filename is empty; leave it out to take the server's or the URL's")
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
