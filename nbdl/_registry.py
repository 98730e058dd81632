"""Pooch-compatible registries: many files with their checksums, downloaded as one batch.

A registry file lists one file per line, in the format pooch's ``load_registry`` reads::

    # name          hash (bare hex means sha256)                              URL (optional)
    train.csv       sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    labels.json     md5:0cc175b9c0f1b6a831c399e269772661
    "my file.bin"   3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b  https://...

Lines are split as a shell would (as pooch does), so quotes let a name hold spaces; a line whose
first character is ``#`` is a comment.  An entry without a URL of its own is fetched from
``base_url`` + the percent-encoded name.  Where pooch fetches one file at a time, a registry here
becomes one ``nbdl.fetch`` batch: parallel, resumable, each file verified against its hash.

Everything is validated when the registry is built, so a bad line is reported (``registry.txt
line 3: ...``) before any request.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack
from urllib.parse import quote

from ._errors import InvalidConfigError
from ._fetch import FetchOptions, fetch
from ._models import Checksum, FileConfig, Results
from ._naming import check_explicit_filename
from ._sync import fetch_sync
from ._urls import check_url, redact_url

__all__ = ["EntryOptions", "Registry"]

#: Universal newlines, so that line numbers match what an editor shows (``str.splitlines``
#: would also split at form feeds and Unicode separators inside a line).
_NEWLINE = re.compile(r"\r\n|\r|\n")
#: What a registry sets on each FileConfig itself.
_FROM_REGISTRY = frozenset({"url", "filename", "checksum"})


class EntryOptions(TypedDict, total=False):
    """``FileConfig`` fields that ``Registry.configs`` may set on every entry."""

    priority: int
    size_bytes: int | None
    size_human: str | None
    content_type: str | None
    headers: Mapping[str, str] | None
    segments: int | None
    extract: bool | None
    extract_to: str | None


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    checksum: Checksum | None
    url: str
    #: The same file under the registry's mirrors (entries fetched from base_url only).
    mirrors: tuple[str, ...]
    #: Where the entry was read ("registry.txt line 3"), for error messages.
    where: str


@dataclass(frozen=True, slots=True)
class _Row:
    """One entry as given, before validation."""

    where: str
    name: object
    hash: object
    url: object


class Registry:
    """Files and their hashes, as pooch lists them, fetched as one parallel ``nbdl`` batch.

    ``entries`` maps file names to hashes (``"alg:hex"`` for any ``hashlib`` algorithm, bare hex
    for sha256, or None for a file not to verify); ``urls`` gives some names a URL of their own,
    the others are fetched from ``base_url`` + the name (``base_url`` is used as given: pooch's
    ``{version}`` is not filled in).  ``mirrors`` are other base URLs holding the same files:
    each such entry gets ``mirror + name`` as ``FileConfig.mirrors``, tried when ``base_url``
    fails.  ``dest`` is the folder ``fetch`` and ``path`` use when
    they are given none (default: the current folder).  Bad input raises ``InvalidConfigError``.
    """

    __slots__ = ("_base_url", "_dest", "_entries", "_mirrors", "_source")

    def __init__(
        self,
        entries: Mapping[str, str | None],
        base_url: str | None = None,
        *,
        urls: Mapping[str, str] | None = None,
        mirrors: Iterable[str] = (),
        dest: str | Path | None = None,
        source: str = "registry",
    ) -> None:
        if not isinstance(entries, Mapping):
            raise InvalidConfigError(
                f"{source}: entries must be a mapping of file names to hashes, "
                f"not {type(entries).__name__}"
            )
        own_urls: Mapping[str, object] = {} if urls is None else urls
        if not isinstance(own_urls, Mapping):
            raise InvalidConfigError(f"{source}: urls must be a mapping of file names to URLs")
        strays = [name for name in own_urls if name not in entries]
        if strays:
            raise InvalidConfigError(
                f"{source}: urls names {strays[0]!r}, which is not in the registry"
            )
        rows = [
            _Row(f"{source} entry {name!r}", name, digest, own_urls.get(name))
            for name, digest in entries.items()
        ]
        self._init(rows, base_url, mirrors, dest, source)

    def _init(
        self,
        rows: Iterable[_Row],
        base_url: str | None,
        mirrors: Iterable[str],
        dest: str | Path | None,
        source: str,
    ) -> None:
        self._source = source
        self._base_url = _check_base_url(base_url, source, "base_url")
        if isinstance(mirrors, str) or not isinstance(mirrors, Iterable):
            raise InvalidConfigError(f"{source}: mirrors must be a list of base URLs")
        self._mirrors = tuple(_check_base_url(m, source, "mirror") or "" for m in mirrors)
        if self._mirrors and self._base_url is None:
            raise InvalidConfigError(f"{source}: mirrors stand in for base_url, which is missing")
        if len({self._base_url, *self._mirrors}) != len(self._mirrors) + 1:
            raise InvalidConfigError(f"{source}: mirrors must differ from each other and base_url")
        if dest is not None and (not isinstance(dest, str | Path) or str(dest) == ""):
            raise InvalidConfigError(f"{source}: dest must be a folder path, got {dest!r}")
        self._dest = None if dest is None else Path(dest).expanduser()
        self._entries: dict[str, _Entry] = {}
        by_url: dict[str, _Entry] = {}
        for row in rows:
            entry = self._entry(row)
            first = self._entries.get(entry.name)
            if first is not None:
                raise InvalidConfigError(
                    f"{row.where}: {entry.name!r} is listed twice (first in {first.where})"
                )
            twin = by_url.get(entry.url)
            if twin is not None:
                raise InvalidConfigError(
                    f"{row.where}: {entry.name!r} has the same URL as {twin.name!r} "
                    f"({twin.where}); list a file once"
                )
            self._entries[entry.name] = by_url[entry.url] = entry

    def _entry(self, row: _Row) -> _Entry:
        where, name = row.where, row.name
        if not isinstance(name, str) or not name:
            raise InvalidConfigError(f"{where}: a file name must be a non-empty string")
        if "/" in name or "\\" in name:
            raise InvalidConfigError(
                f"{where}: {name!r} is in a folder; nbdl saves registry files under plain "
                "names for now (a known limit): list the folder's files in a registry of "
                "their own and fetch it into that folder"
            )
        try:
            check_explicit_filename(name)
        except ValueError as exc:
            raise InvalidConfigError(f"{where}: {exc}") from None
        checksum = _checksum(row.hash, where)
        if row.url is not None:
            try:
                return _Entry(name, checksum, check_url(row.url), (), where)
            except ValueError as exc:
                raise InvalidConfigError(f"{where}: {exc}") from None
        if self._base_url is None:
            raise InvalidConfigError(
                f"{where}: {name!r} has no URL of its own and the registry has no base_url"
            )
        # A plain name has no '/', so quoting everything but the unreserved characters yields
        # one path segment, whatever spaces, '%' or '#' it holds.
        segment = quote(name, safe="")
        mirrors = tuple(mirror + segment for mirror in self._mirrors)
        return _Entry(name, checksum, self._base_url + segment, mirrors, where)

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_text(
        cls,
        text: str,
        base_url: str | None = None,
        *,
        mirrors: Iterable[str] = (),
        dest: str | Path | None = None,
        source: str = "<registry>",
    ) -> Registry:
        """A registry from the text of a pooch registry file; errors name ``source`` and line."""
        if not isinstance(text, str):
            raise InvalidConfigError(f"{source}: a registry is text, not {type(text).__name__}")
        rows = []
        for number, raw in enumerate(_NEWLINE.split(text), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{source} line {number}"
            try:
                words = shlex.split(line)
            except ValueError as exc:
                raise InvalidConfigError(f"{where}: {exc}") from None
            if len(words) not in (2, 3):
                raise InvalidConfigError(
                    f"{where}: expected 'name hash [url]', got {len(words)} field"
                    f"{'s' if len(words) != 1 else ''}: {line[:80]!r}"
                )
            rows.append(_Row(where, words[0], words[1], words[2] if len(words) == 3 else None))
        registry = cls.__new__(cls)
        registry._init(rows, base_url, mirrors, dest, source)
        return registry

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        base_url: str | None = None,
        *,
        mirrors: Iterable[str] = (),
        dest: str | Path | None = None,
    ) -> Registry:
        """A registry from a pooch registry file (UTF-8); errors name the file and line.

        A file that cannot be read raises ``OSError`` as ``open`` does.
        """
        data = Path(path).read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidConfigError(
                f"{path}: not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})"
            ) from None
        return cls.from_text(text, base_url, mirrors=mirrors, dest=dest, source=str(path))

    @classmethod
    def from_pooch(cls, pooch: Any) -> Registry:
        """The registry of a ``pooch.Pooch`` (its ``registry``, ``base_url``, ``urls``, ``path``).

        ``fetch`` and ``path`` then default to the pooch's own folder, so that the pooch finds
        the files there, verified, and downloads nothing.  Nothing is imported from pooch.
        """
        registry = getattr(pooch, "registry", None)
        if not isinstance(registry, Mapping):
            raise InvalidConfigError(
                "from_pooch needs a pooch.Pooch: an object with a 'registry' mapping of file "
                f"names to hashes and a 'base_url'; got {type(pooch).__name__}"
            )
        return cls(
            registry,
            getattr(pooch, "base_url", None),
            urls=getattr(pooch, "urls", None) or {},
            dest=getattr(pooch, "abspath", None),
            source="pooch registry",
        )

    # -- reading -------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """The file names, in registry order."""
        return tuple(self._entries)

    @property
    def base_url(self) -> str | None:
        """The URL entries without their own are fetched under (ends in ``/``), or None."""
        return self._base_url

    @property
    def mirrors(self) -> tuple[str, ...]:
        """Other base URLs with the same files (each ends in ``/``)."""
        return self._mirrors

    def url(self, name: str) -> str:
        """The URL ``name`` is downloaded from."""
        return self._get(name).url

    def checksum(self, name: str) -> str | None:
        """The expected digest of ``name`` as ``"alg:hex"``, or None if it is not verified."""
        found = self._get(name).checksum
        return None if found is None else str(found)

    def path(self, name: str, dest: str | Path | None = None) -> Path:
        """Where ``name`` lands when fetched into ``dest`` (default: the registry's folder)."""
        return self._folder(dest) / self._get(name).name

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        base = "" if self._base_url is None else f", base_url={redact_url(self._base_url)!r}"
        return f"<Registry {self._source}: {len(self)} files{base}>"

    # -- downloading ---------------------------------------------------------------------------
    def configs(
        self, names: str | Iterable[str] | None = None, **fields: Unpack[EntryOptions]
    ) -> list[FileConfig]:
        """One ``FileConfig`` per name (None: every entry) with its URL, name and checksum.

        ``fields`` are other ``FileConfig`` fields set on each (``extract=True``, ``priority=5``,
        ...), so that registry files can be combined with other items in one ``nbdl.fetch``.
        """
        taken = sorted(_FROM_REGISTRY & set(fields))
        if taken:
            raise InvalidConfigError(f"{taken[0]} is set by the registry for each file")
        if "mirrors" in fields:
            raise InvalidConfigError(
                "mirrors are other URLs of one file, so they cannot be shared by every entry; "
                "give the registry mirrors=[other base URLs] instead"
            )
        configs = []
        for entry in self._select(names):
            try:
                configs.append(
                    FileConfig(
                        entry.url,
                        filename=entry.name,
                        checksum=None if entry.checksum is None else str(entry.checksum),
                        mirrors=entry.mirrors,
                        **fields,
                    )
                )
            except (TypeError, ValueError) as exc:
                raise InvalidConfigError(f"{entry.name}: {exc}") from None
        return configs

    async def fetch(
        self,
        names: str | Iterable[str] | None = None,
        dest: str | Path | None = None,
        **options: Unpack[FetchOptions],
    ) -> Results:
        """Download ``names`` (None: all) into ``dest`` at once, each verified; see ``nbdl.fetch``.

        Files already complete at their final path (their hash checked) cost no request.
        """
        return await fetch(self.configs(names), self._folder(dest), **options)

    def fetch_sync(
        self,
        names: str | Iterable[str] | None = None,
        dest: str | Path | None = None,
        **options: Unpack[FetchOptions],
    ) -> Results:
        """``fetch`` for code that cannot ``await``; see ``nbdl.fetch_sync``."""
        return fetch_sync(self.configs(names), self._folder(dest), **options)

    # -- helpers -------------------------------------------------------------------------------
    def _folder(self, dest: str | Path | None) -> Path:
        if dest is None:
            return self._dest if self._dest is not None else Path()
        if not isinstance(dest, str | Path) or str(dest) == "":
            raise InvalidConfigError(f"dest must be a folder path, got {dest!r}")
        return Path(dest).expanduser()

    def _get(self, name: object) -> _Entry:
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidConfigError(f"{name!r} is not in the registry ({self._source}){hint}")
        return entry

    def _select(self, names: str | Iterable[str] | None) -> list[_Entry]:
        if names is None:
            return list(self._entries.values())
        if isinstance(names, str):
            return [self._get(names)]
        if not isinstance(names, Iterable):
            raise InvalidConfigError(
                f"names must be a file name, a list of them or None, not {type(names).__name__}"
            )
        return [self._get(name) for name in names]


def _check_base_url(base_url: object, source: str, label: str) -> str | None:
    """``base_url`` checked, ending in ``/`` (as pooch makes it), or None."""
    if base_url is None:
        return None
    if isinstance(base_url, str) and base_url.startswith("doi:"):
        raise InvalidConfigError(
            f"{source}: {label} {base_url!r} is a DOI; nbdl needs the https URL of the files"
        )
    try:
        url = check_url(base_url)
    except ValueError as exc:
        raise InvalidConfigError(f"{source}: {label}: {exc}") from None
    if "?" in url or "#" in url:
        raise InvalidConfigError(
            f"{source}: {label} {redact_url(url)!r} has a query or fragment; file names are "
            "appended to it, so it must end with a path"
        )
    return url if url.endswith("/") else url + "/"


def _checksum(digest: object, where: str) -> Checksum | None:
    if digest is None:
        return None
    if not isinstance(digest, str):
        raise InvalidConfigError(f"{where}: a hash must be a string, not {type(digest).__name__}")
    # As in pooch, a hash without an algorithm is sha256.
    text = digest if ":" in digest else f"sha256:{digest}"
    try:
        return Checksum.parse(text)
    except ValueError as exc:
        bare = "" if ":" in digest else " (a hash without 'alg:' is sha256, as in pooch)"
        raise InvalidConfigError(f"{where}: {exc}{bare}") from None
