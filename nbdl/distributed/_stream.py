"""A manifest read lazily and cut into shards, so the client never holds a huge one whole.

Text manifests stream line by line (``#`` comments, options after the URL, as ``nbdl fetch -i``
reads them); CSV and JSON manifests are parsed whole by ``nbdl._manifest`` (a JSON list cannot be
streamed without another parser; use text for lists of millions of files).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .._errors import InvalidConfigError
from .._manifest import parse_manifest
from .._models import FileConfig
from .._urls import SIMPLE_URL

Item = str | FileConfig
Manifest = Iterable[Item] | str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class Shard:
    """A run of consecutive manifest items: ``items[k]`` is item ``first + k`` of the manifest."""

    index: int
    first: int
    items: list[Item]


def is_manifest_path(manifest: object) -> bool:
    """True when ``manifest`` names a file (a ``Path``, or a string that is not a URL)."""
    if isinstance(manifest, os.PathLike):
        return True
    if isinstance(manifest, str):
        if manifest.startswith(("http://", "https://")):
            raise InvalidConfigError(
                "manifest is a single URL; pass a list of URLs, or the path of a manifest file"
            )
        return True
    return False


def read_items(manifest: Manifest) -> Iterator[Item]:
    """The items of ``manifest`` (an iterable of items, or the path of a manifest file)."""
    if isinstance(manifest, FileConfig):
        raise InvalidConfigError(
            "manifest is a single FileConfig; wrap it in a list, or pass a manifest file's path"
        )
    if is_manifest_path(manifest):
        assert isinstance(manifest, str | os.PathLike)
        return _read_file(Path(manifest))
    if not isinstance(manifest, Iterable):
        raise InvalidConfigError(
            f"manifest must be an iterable of URLs or FileConfig objects, or a path, "
            f"got {type(manifest).__name__}"
        )
    return iter(manifest)


def _read_file(path: Path) -> Iterator[Item]:
    source = str(path)
    suffix = path.suffix.lower()
    try:
        file = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InvalidConfigError(f"cannot read the manifest {source}: {exc}") from None
    with file:
        try:
            first = file.read(4096)
        except UnicodeDecodeError as exc:
            raise InvalidConfigError(f"cannot read the manifest {source}: {exc}") from None
        stripped = first.lstrip()
        if suffix in (".csv", ".json") or stripped.startswith(("[", "{")) or _looks_csv(first):
            yield from parse_manifest(first + file.read(), source)
            return
        file.seek(0)
        for number, line in enumerate(file, start=1):
            item = _text_line(line, source, number)
            if item is not None:
                yield item


def _looks_csv(head: str) -> bool:
    for line in head.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            columns = [c.strip().lower() for c in line.split(",")]
            return "url" in columns and len(columns) > 1
    return False


def _text_line(line: str, source: str, number: int) -> Item | None:
    """One text manifest line: a bare URL stays a string (the engine's cheapest item)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    simple = SIMPLE_URL.fullmatch(text)
    if simple and (simple[1] is None or int(simple[1]) <= 65535):
        return text
    try:
        (config,) = parse_manifest(text, source, "text")
    except InvalidConfigError as exc:
        # parse_manifest numbers the one line it was given 1; say which line it really is.
        message = str(exc).replace(f"{source} line 1:", f"{source} line {number}:", 1)
        raise InvalidConfigError(message) from None
    return config


def shards(items: Iterable[Item], size: int) -> Iterator[Shard]:
    """``items`` in shards of ``size`` (the last may be shorter), read only as they are needed."""
    iterator = iter(items)
    first = 0
    for index in itertools.count():
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield Shard(index, first, chunk)
        first += len(chunk)
