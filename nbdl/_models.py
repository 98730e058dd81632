"""The data model: what to download (``FileConfig``) and what happened (``DownloadInfo``)."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import math
import operator
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import overload

from ._errors import DownloadError, ErrorKind, InvalidConfigError, error_from_info
from ._naming import check_explicit_filename
from ._urls import check_url, redact_url


class DownloadStatus(StrEnum):
    """Where a download is in its life: QUEUED → PENDING → IN_PROGRESS → a terminal state.

    PROCESSING comes between IN_PROGRESS and COMPLETED when processors (extraction, say) run
    on the verified file.
    """

    QUEUED = "queued"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset(
    {DownloadStatus.COMPLETED, DownloadStatus.FAILED, DownloadStatus.CANCELLED}
)


@dataclass(frozen=True, slots=True)
class Checksum:
    """An expected digest, parsed from ``"alg:hex"``."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """Parse ``"sha256:ab12..."``; an unknown algorithm or malformed digest is a ValueError."""
        if not isinstance(text, str) or ":" not in text:
            raise ValueError(f"checksum must look like 'sha256:<hex digest>', got {text!r}")
        algorithm, _, digest = text.partition(":")
        algorithm = algorithm.strip().lower().replace("-", "")
        digest = digest.strip().lower()
        if algorithm not in hashlib.algorithms_available:
            raise ValueError(
                f"unknown checksum algorithm {algorithm!r}; use one of "
                f"{', '.join(sorted(hashlib.algorithms_guaranteed))}"
            )
        hasher = hashlib.new(algorithm)
        if hasher.digest_size == 0:  # shake_* need a length; a fixed one would be a guess
            raise ValueError(f"checksum algorithm {algorithm!r} has no fixed digest size")
        expected = hasher.digest_size * 2
        if len(digest) != expected or not set(digest) <= set(string.hexdigits.lower()):
            raise ValueError(
                f"{algorithm} checksum must be {expected} hex digits, got {len(digest)} "
                f"characters: {digest[:80]!r}"
            )
        return cls(algorithm, digest)

    def new_hasher(self) -> hashlib._Hash:
        """A fresh hash object for this algorithm."""
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@dataclass(frozen=True, slots=True)
class FileConfig:
    """One file to download, with the user's hints.  Higher ``priority`` starts first."""

    url: str
    filename: str | None = None
    priority: int = 1
    size_bytes: int | None = None
    size_human: str | None = None
    content_type: str | None = None
    checksum: str | None = None
    headers: Mapping[str, str] | None = None
    #: Up to this many ranged connections for this file; None: automatic, 1: one stream.
    segments: int | None = None
    #: Other URLs of the same file, tried in order when the one before fails in a way another
    #: server may not (connection, timeout, 5xx, 404).
    mirrors: Sequence[str] = ()
    #: Extract the verified archive (True: into ``dest/<name without archive suffixes>``;
    #: None: as the batch says).
    extract: bool | None = None
    #: The folder (a plain name inside ``dest``) to extract into, instead of the default one.
    extract_to: str | None = None

    def __post_init__(self) -> None:
        check_url(self.url)
        if isinstance(self.mirrors, str) or not isinstance(self.mirrors, Sequence | Iterable):
            raise ValueError(f"mirrors must be a list of URLs, got {self.mirrors!r}")
        mirrors = tuple(self.mirrors)
        for mirror in mirrors:
            if not isinstance(mirror, str):
                raise ValueError(f"mirrors must be URL strings, got {mirror!r}")
            check_url(mirror)
        if len(set(mirrors)) != len(mirrors) or self.url in mirrors:
            raise ValueError("mirrors must differ from each other and from url")
        object.__setattr__(self, "mirrors", mirrors)
        if self.extract is not None and not isinstance(self.extract, bool):
            raise ValueError(f"extract must be True, False or None, got {self.extract!r}")
        if self.extract_to is not None:
            try:
                check_explicit_filename(self.extract_to)
            except ValueError as exc:
                raise ValueError(f"extract_to: {exc}") from None
            if self.extract is False:
                raise ValueError("extract_to is given but extract=False")
        if self.filename is not None:
            check_explicit_filename(self.filename)
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"priority must be an int, got {self.priority!r}")
        if self.size_bytes is not None:
            check_int("size_bytes", self.size_bytes, 0)
        if self.checksum is not None:
            Checksum.parse(self.checksum)
        if self.segments is not None:
            check_int("segments", self.segments, 1)
        if self.headers is not None:
            check_headers(self.headers)
            # Frozen means frozen: a caller's dict mutated later must not change this config.
            object.__setattr__(self, "headers", dict(self.headers))

    @classmethod
    def _of_checked_url(cls, url: str) -> FileConfig:
        """The default config of ``url``, which ``check_url`` has accepted already.

        The queue keeps bare URLs as strings (a config each would be 100,000 objects for a big
        manifest) and makes the config when the download starts: parsing the URL again there
        was a tenth of the work of a small file.
        """
        config = object.__new__(cls)
        object.__setattr__(config, "url", url)
        for name, value in _FILE_CONFIG_DEFAULTS:
            object.__setattr__(config, name, value)
        return config

    @property
    def parsed_checksum(self) -> Checksum | None:
        """The checksum as a :class:`Checksum`, or None."""
        return None if self.checksum is None else Checksum.parse(self.checksum)

    def __repr__(self) -> str:
        extras = "".join(
            f", {name}={value!r}"
            for name, value in (
                ("filename", self.filename),
                ("priority", self.priority if self.priority != 1 else None),
                ("size_bytes", self.size_bytes),
                ("checksum", self.checksum),
                ("mirrors", [redact_url(m) for m in self.mirrors] or None),
                ("extract", self.extract),
                ("extract_to", self.extract_to),
            )
            if value is not None
        )
        return f"FileConfig({redact_url(self.url)!r}{extras})"


_FILE_CONFIG_DEFAULTS = tuple(
    (f.name, f.default) for f in dataclasses.fields(FileConfig) if f.name != "url"
)


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int (not a bool) >= ``minimum``, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_headers(headers: object) -> dict[str, str]:
    """Validate a mapping of request headers (str to str, no line breaks)."""
    if not isinstance(headers, Mapping):
        raise ValueError(f"headers must be a mapping of str to str, not {type(headers).__name__}")
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"header {key!r}: names and values must be strings")
        if not key or any(ch in key for ch in " :\r\n\t") or any(ch in value for ch in "\r\n"):
            raise ValueError(f"header {key!r} has an invalid name or value")
    return dict(headers)


@dataclass(frozen=True, slots=True)
class PatchDownloadInfo:
    """A partial update of a ``DownloadInfo``: only the fields that are not None are applied."""

    status: DownloadStatus | None = None
    path: Path | None = None
    bytes_downloaded: int | None = None
    total_bytes: int | None = None
    attempts: int | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    http_status: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    resumed_from: int | None = None
    from_cache: bool | None = None
    note: str | None = None
    output: Path | None = None
    served_by: str | None = None


@dataclass(frozen=True, slots=True)
class DownloadInfo:
    """Everything known about one download at one moment.  Immutable: updates make a new one."""

    url: str
    path: Path
    status: DownloadStatus = DownloadStatus.QUEUED
    bytes_downloaded: int = 0
    total_bytes: int | None = None
    priority: int = 1
    attempts: int = 0
    error: str | None = None
    error_kind: ErrorKind | None = None
    http_status: int | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    #: Bytes already on disk from an earlier attempt or run when the current transfer began.
    resumed_from: int = 0
    #: True when the file was already complete at its final path and nothing was requested.
    from_cache: bool = False
    #: What is going on besides the status, e.g. why the download is waiting to retry.
    note: str | None = None
    #: What the processors made of the file, e.g. the folder an archive was extracted to.
    output: Path | None = None
    #: The URL that served the bytes, when it was a mirror rather than ``url``.
    served_by: str | None = None
    #: Where the file was stored when ``dest`` is not a local folder, e.g.
    #: ``s3://bucket/prefix/name`` (``path`` is then just the name); None for a local file.
    location: str | None = None

    @property
    def filename(self) -> str:
        """The final file name."""
        return self.path.name

    def apply(self, patch: PatchDownloadInfo) -> DownloadInfo:
        """A copy with the patch's non-None fields applied."""
        # Called for every report (once: a DownloadTracker tracker is the manager's store):
        # both records are read as tuples in C and the copy's slots are filled directly
        # (2.0 us, vs 2.9 us through the frozen __init__, which sets each field with
        # object.__setattr__; ~10x faster than dataclasses.replace).  DownloadInfo has no
        # __post_init__ to skip.
        values: list[object] | None = None
        for index, value in zip(_PATCH_TARGETS, _patch_values(patch), strict=True):
            if value is not None:
                if values is None:
                    values = list(_info_values(self))
                values[index] = value
        if values is None:
            return self
        new = _new_info(DownloadInfo)
        for put, value in zip(_INFO_SETTERS, values, strict=True):
            put(new, value)
        return new

    def get_progress(self) -> float | None:
        """Fraction done, from 0.0 to 1.0, or None while the size is unknown."""
        if self.status is DownloadStatus.COMPLETED:
            return 1.0
        if not self.total_bytes:
            return None
        return min(1.0, self.bytes_downloaded / self.total_bytes)

    def is_terminal(self) -> bool:
        """True once the download completed, failed or was cancelled."""
        return self.status in TERMINAL_STATUSES

    def get_speed_estimate(self, now: float | None = None) -> float | None:
        """Average bytes per second of this run's transfer, or None before any byte arrived."""
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        if now is not None and self.finished_at is None:
            end = now
        elapsed = end - self.started_at
        transferred = self.bytes_downloaded - self.resumed_from
        if elapsed <= 0 or transferred <= 0:
            return None
        return transferred / elapsed

    @property
    def elapsed(self) -> float | None:
        """Seconds from the first request to the end (or now), or None if never started."""
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.started_at)

    def __repr__(self) -> str:
        size = format_bytes(self.bytes_downloaded)
        if self.total_bytes is not None:
            size += f"/{format_bytes(self.total_bytes)}"
        error = f", error={self.error!r}" if self.error else ""
        return (
            f"DownloadInfo({redact_url(self.url)!r}, status={self.status.value}, "
            f"path={self.location or str(self.path)!r}, {size}{error})"
        )


_PATCH_FIELDS = tuple(f.name for f in dataclasses.fields(PatchDownloadInfo))
_INFO_FIELDS = tuple(f.name for f in dataclasses.fields(DownloadInfo))
#: Where each patch field goes among DownloadInfo's positional arguments.
_PATCH_TARGETS = tuple(_INFO_FIELDS.index(name) for name in _PATCH_FIELDS)
_patch_values = operator.attrgetter(*_PATCH_FIELDS)
_info_values = operator.attrgetter(*_INFO_FIELDS)
#: The slots' own setters (a frozen class forbids setattr, not its descriptors).
_INFO_SETTERS: tuple[Callable[[DownloadInfo, object], None], ...] = tuple(
    DownloadInfo.__dict__[name].__set__ for name in _INFO_FIELDS
)
_new_info = object.__new__


def format_bytes(count: float | None) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class Results(Sequence[DownloadInfo]):
    """The outcome of a batch: one ``DownloadInfo`` per input item, in input order.

    A failed file never raises out of ``fetch``; call :meth:`raise_for_errors` to turn failures
    into exceptions.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Sequence[DownloadInfo]) -> None:
        self._items = tuple(items)

    @overload
    def __getitem__(self, index: int) -> DownloadInfo: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[DownloadInfo]: ...
    def __getitem__(self, index: int | slice) -> DownloadInfo | Sequence[DownloadInfo]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[DownloadInfo]:
        return iter(self._items)

    @property
    def completed(self) -> list[DownloadInfo]:
        """The downloads that completed (including files already present)."""
        return [i for i in self._items if i.status is DownloadStatus.COMPLETED]

    @property
    def failed(self) -> list[DownloadInfo]:
        """The downloads that failed."""
        return [i for i in self._items if i.status is DownloadStatus.FAILED]

    @property
    def cancelled(self) -> list[DownloadInfo]:
        """The downloads that were cancelled before they ended."""
        return [i for i in self._items if i.status is DownloadStatus.CANCELLED]

    @property
    def paths(self) -> list[Path]:
        """Final paths of the completed downloads, in input order."""
        return [i.path for i in self.completed]

    @property
    def locations(self) -> list[str]:
        """Where each completed download is: its object URL, or its local path as a string."""
        return [i.location or str(i.path) for i in self.completed]

    @property
    def outputs(self) -> list[Path]:
        """What the processors made of the completed downloads (extracted folders, ...)."""
        return [i.output for i in self.completed if i.output is not None]

    @property
    def ok(self) -> bool:
        """True when every download completed."""
        return all(i.status is DownloadStatus.COMPLETED for i in self._items)

    def raise_for_errors(self) -> None:
        """Raise an ``ExceptionGroup`` of ``DownloadError``s if any download failed.

        It is always a group, even for a single failure, so that ``except* DownloadError``
        handles every case the same way.  Does nothing when every download completed.
        """
        seen: set[str] = set()
        errors: list[DownloadError] = []
        for info in self.failed:
            if info.url not in seen:
                seen.add(info.url)
                errors.append(error_from_info(info))
        if errors:
            raise ExceptionGroup(f"{len(errors)} of {len(self)} downloads failed", errors)

    def _summary(self) -> str:
        counts = [f"{len(self.completed)} completed"]
        if self.failed:
            counts.append(f"{len(self.failed)} failed")
        if self.cancelled:
            counts.append(f"{len(self.cancelled)} cancelled")
        return f"{len(self)} files: {', '.join(counts)}"

    def __repr__(self) -> str:
        lines = [f"<Results {self._summary()}>"]
        for info in self._items:
            if info.status is not DownloadStatus.COMPLETED:
                detail = f": {info.error}" if info.error else ""
                lines.append(f"  {info.status.value:<9} {info.filename}{detail}")
        return "\n".join(lines)

    #: Rows ``_repr_html_`` shows at most; a notebook cell is no place for 10,000 rows.
    _HTML_ROWS = 200

    def _repr_html_(self) -> str:
        shown = list(self._items)
        if len(shown) > self._HTML_ROWS:
            # Problems first: they are what the reader is looking for.
            problems = [i for i in shown if i.status is not DownloadStatus.COMPLETED]
            chosen = {id(i) for i in problems[: self._HTML_ROWS]}
            for info in shown:
                if len(chosen) >= self._HTML_ROWS:
                    break
                chosen.add(id(info))
            shown = [i for i in shown if id(i) in chosen]
        hidden = len(self._items) - len(shown)
        rows = []
        for info in shown:
            colour = {
                DownloadStatus.FAILED: "#fde2e1",
                DownloadStatus.CANCELLED: "#fff4ce",
            }.get(info.status, "")
            style = f' style="background:{colour}"' if colour else ""
            took = f"{info.elapsed:.2f} s" if info.elapsed is not None else ""
            status = "cached" if info.from_cache else info.status.value
            rows.append(
                f"<tr{style}><td>{html.escape(info.location or info.filename)}</td>"
                f"<td>{format_bytes(info.bytes_downloaded)}</td><td>{status}</td>"
                f"<td>{took}</td><td>{html.escape(info.error or '')}</td></tr>"
            )
        if hidden:
            rows.append(
                f'<tr><td colspan="5"><i>... and {hidden} more, all completed unless counted '
                "above</i></td></tr>"
            )
        return (
            f"<p><b>nbdl</b>: {html.escape(self._summary())}</p>"
            "<table><thead><tr><th>file</th><th>size</th><th>status</th><th>time</th>"
            f"<th>error</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """Limits that stop a decompression bomb while it streams; raise them for trusted archives.

    Bytes are counted as they are written, not taken from what an archive declares.
    """

    #: Total bytes extracted.  64 GiB holds the big single-archive data sets of notebooks (COCO
    #: train2017 is 19 GB, ImageNet-1k val 6.4 GB) and stops a bomb before it fills the ~100 GB
    #: disk of a typical cloud notebook.
    max_bytes: int = 64 * 1024**3
    #: Extracted bytes per archive byte (archives under 1 MiB count as 1 MiB).  Real data
    #: compresses 2-20x, very repetitive text up to ~100x; one layer of deflate tops out near
    #: 1000x, and bombs (overlapping zip entries, bzip2/xz/zstd of zeros) go far beyond.
    max_ratio: float = 200.0
    #: Files, folders and links.  Above the largest common image sets shipped as one archive
    #: (COCO train2017: 118k files), and below the inode count of a small disk.
    max_members: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_members"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidConfigError(
                    f"ExtractLimits.{name} must be a positive int, got {value!r}"
                )
        ratio = self.max_ratio
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, int | float)
            or math.isnan(ratio)
            or ratio <= 0
        ):
            raise InvalidConfigError(
                f"ExtractLimits.max_ratio must be a positive number (math.inf for none), "
                f"got {ratio!r}"
            )
