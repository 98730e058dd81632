"""Manifests for ``nbdl fetch -i``: lists of files as text, CSV or JSON.

Text, one file per line (``#`` starts a comment line; options use shell quoting)::

    https://example.org/a.csv
    https://example.org/b.tar  filename=b.tar priority=5 checksum=sha256:9f86...
    https://example.org/c.zip  mirrors="https://mirror-1.example/c.zip https://mirror-2.example/c.zip"

CSV: a header row with a ``url`` column and any other ``FileConfig`` field as columns
(``mirrors``: URLs separated by spaces).
JSON: a list whose items are URL strings or objects of ``FileConfig`` fields (``mirrors``: a list).

Every error names the line (or JSON item) it comes from.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shlex
from collections.abc import Mapping
from typing import Any

from ._errors import InvalidConfigError
from ._models import FileConfig

__all__ = ["parse_manifest"]

_FIELDS = tuple(f.name for f in dataclasses.fields(FileConfig))
_INT_FIELDS = ("priority", "size_bytes")
_TEXT_OPTIONS = ("filename", "priority", "checksum", "mirrors")


def parse_manifest(text: str, source: str, fmt: str | None = None) -> list[FileConfig]:
    """The files listed in ``text``; ``fmt`` is "text", "csv" or "json" (None: guess).

    Raises ``InvalidConfigError`` naming ``source`` and the bad line.
    """
    if fmt is None:
        fmt = _guess_format(text, source)
    if fmt == "json":
        return _parse_json(text, source)
    if fmt == "csv":
        return _parse_csv(text, source)
    return _parse_text(text, source)


def _guess_format(text: str, source: str) -> str:
    lowered = source.lower()
    for suffix in ("json", "csv"):
        if lowered.endswith(f".{suffix}"):
            return suffix
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        return "json"
    for line in stripped.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            columns = [c.strip().lower() for c in next(csv.reader([line]))]
            return "csv" if "url" in columns and len(columns) > 1 else "text"
    return "text"


def _config(values: Mapping[str, Any], where: str) -> FileConfig:
    try:
        return FileConfig(**values)
    except (TypeError, ValueError) as exc:
        raise InvalidConfigError(f"{where}: {exc}") from None


def _as_int(name: str, value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidConfigError(f"{where}: {name} must be an integer, got {value!r}") from None


def _field_value(name: str, text: str, where: str) -> object:
    """A text option or CSV cell as the ``FileConfig`` field ``name`` takes it."""
    if name in _INT_FIELDS:
        return _as_int(name, text, where)
    if name == "mirrors":  # URLs hold no whitespace, so spaces separate them
        return text.split()
    return text


def _parse_text(text: str, source: str) -> list[FileConfig]:
    configs = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        try:
            # Quoting lets a filename hold spaces; '#' stays literal (URLs have fragments).
            words = shlex.split(line, comments=False)
        except ValueError as exc:
            raise InvalidConfigError(f"{where}: {exc}") from None
        values: dict[str, Any] = {"url": words[0]}
        for word in words[1:]:
            name, sep, value = word.partition("=")
            if not sep or name not in _TEXT_OPTIONS:
                raise InvalidConfigError(
                    f"{where}: unexpected {word!r} after the URL; options are "
                    + ", ".join(f"{option}=..." for option in _TEXT_OPTIONS)
                )
            values[name] = _field_value(name, value, where)
        configs.append(_config(values, where))
    return configs


def _parse_csv(text: str, source: str) -> list[FileConfig]:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    if "url" not in columns:
        raise InvalidConfigError(f"{source} line 1: a CSV manifest needs a 'url' column")
    allowed = [f for f in _FIELDS if f != "headers"]
    for column in columns:
        if column not in allowed:
            raise InvalidConfigError(
                f"{source} line 1: unknown column {column!r}; columns are {', '.join(allowed)}"
            )
    configs = []
    for row in reader:
        where = f"{source} line {reader.line_num}"
        if None in row:
            raise InvalidConfigError(f"{where}: more cells than columns")
        values: dict[str, Any] = {}
        for key, cell in row.items():
            cell = (cell or "").strip()
            if not cell:
                continue
            name = key.strip()
            values[name] = _field_value(name, cell, where)
        if not values:
            continue
        if "url" not in values:
            raise InvalidConfigError(f"{where}: the url cell is empty")
        configs.append(_config(values, where))
    return configs


def _parse_json(text: str, source: str) -> list[FileConfig]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidConfigError(f"{source} line {exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, list):
        raise InvalidConfigError(f"{source}: a JSON manifest must be a list of files")
    configs = []
    for index, item in enumerate(data):
        where = f"{source} item {index}"
        if isinstance(item, str):
            configs.append(_config({"url": item}, where))
        elif isinstance(item, dict):
            unknown = sorted(set(item) - set(_FIELDS))
            if unknown:
                raise InvalidConfigError(
                    f"{where}: unknown field {unknown[0]!r}; fields are {', '.join(_FIELDS)}"
                )
            if "url" not in item:
                raise InvalidConfigError(f"{where}: the object has no 'url'")
            configs.append(_config(item, where))
        else:
            raise InvalidConfigError(f"{where}: expected a URL or an object, got {item!r}")
    return configs
