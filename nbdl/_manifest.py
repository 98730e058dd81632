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

import contextlib
import csv
import dataclasses
import io
import json
import shlex
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import InvalidConfigError
from ._models import FileConfig

__all__ = ["parse_manifest"]

_FIELDS = tuple(f.name for f in dataclasses.fields(FileConfig))
_INT_FIELDS = ("priority", "size_bytes", "segments")
_TEXT_OPTIONS = ("filename", "priority", "checksum", "mirrors", "extract", "extract_to")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def parse_manifest(text: str, source: str, fmt: str | None = None) -> list[FileConfig]:
    """The files listed in ``text``; ``fmt`` is "text", "csv" or "json" (None: guess).

    Raises ``InvalidConfigError`` naming ``source`` and the bad line.
    """
    # Windows tools start UTF-8 with a byte order mark; read_text("utf-8-sig") drops it from a
    # file, but standard input and callers keep it.
    text = text.removeprefix("\ufeff")
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
    for line in _lines(stripped):
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                columns = [c.strip().lower() for c in next(csv.reader([line]))]
            except csv.Error:  # a cell over the csv module's limit: not a header row
                return "text"
            return "csv" if "url" in columns and len(columns) > 1 else "text"
    return "text"


def _lines(text: str) -> list[str]:
    # The lines an editor shows, as Path.read_text makes them: str.splitlines also breaks at
    # form feeds, U+0085 and U+2028, which a comment may hold; and line numbers must match.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


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
    if name == "extract":
        flag = _BOOLEANS.get(text.strip().lower())
        if flag is None:
            raise InvalidConfigError(f"{where}: extract must be true or false, got {text!r}")
        return flag
    return text


def _parse_text(text: str, source: str) -> list[FileConfig]:
    configs = []
    for number, raw in enumerate(_lines(text), start=1):
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
    reader = _CsvReader(text, source)
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
    except (ValueError, RecursionError) as exc:  # a number of 4300+ digits; nesting too deep
        raise InvalidConfigError(f"{source}: invalid JSON: {exc}") from None
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


if TYPE_CHECKING:
    _DictReader = csv.DictReader[str]
else:  # not subscriptable at run time before Python 3.12
    _DictReader = csv.DictReader


class _CsvReader(_DictReader):
    """A ``csv.DictReader`` whose errors (a cell over 128 KiB, say) name the line."""

    def __init__(self, text: str, source: str) -> None:
        # newline="": what the csv module needs to see line breaks inside quoted cells.
        super().__init__(io.StringIO(text, newline=""))
        self._source = source
        with self._located():
            _ = self.fieldnames  # the header is read here, where its errors are located

    def __next__(self) -> dict[str | Any, str | Any]:
        with self._located():
            return super().__next__()

    @contextlib.contextmanager
    def _located(self) -> Iterator[None]:
        try:
            yield
        except csv.Error as exc:
            # line_num counts the lines read completely; the error is in the next one.
            raise InvalidConfigError(f"{self._source} line {self.line_num + 1}: {exc}") from None
