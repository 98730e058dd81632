"""The one exception tree of nbdl, and the one place where aiohttp's errors are translated.

::

    Exception
     ├── ValueError
     │    └── InvalidConfigError        bad input to fetch / FileConfig: raised before any request
     ├── RuntimeError
     │    └── BatchConflictError        another running batch of this process writes the same file
     └── DownloadError                   one file failed (.kind, .url, .retryable); kind "generic"
          ├── ConnectionFailedError       "connection": refused, reset, DNS, broken body
          │    └── IncompleteBodyError    the body was shorter or longer than announced
          ├── DownloadTimeoutError        "timeout": no byte for read_timeout, or total timeout
          ├── HTTPStatusError             "http": an answer we cannot use (.status, .retry_after)
          │    └── TooManyRedirectsError  a redirect loop, or more redirects than allowed
          ├── FileSystemError             "file": permission, no space, dest is not a folder
          ├── ChecksumMismatchError       "checksum": the bytes are not the ones asked for
          └── ProcessingError             "process": a processor failed on the verified file
               └── ExtractionError        "extract": an archive refused (unsafe, a bomb) or broken

``DownloadError`` itself stands for failures nobody foresaw.  A failed file is never raised out
of ``fetch``: it is reported in ``Results``; ``Results.raise_for_errors()`` rebuilds these
exceptions from the results with :func:`error_from_info`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import os
import time
from collections.abc import Iterator
from enum import StrEnum
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from ._models import DownloadInfo


class ErrorKind(StrEnum):
    """Why a download failed, following the seed's error classification."""

    CONNECTION = "connection"
    TIMEOUT = "timeout"
    HTTP = "http"
    FILE = "file"
    CHECKSUM = "checksum"
    PROCESS = "process"
    EXTRACT = "extract"
    GENERIC = "generic"


class InvalidConfigError(ValueError):
    """An item or setting given to ``fetch`` is invalid; nothing has been downloaded."""


class BatchConflictError(RuntimeError):
    """Another batch of this process is writing one of the same final paths right now."""


class DownloadError(Exception):
    """A file could not be downloaded.  ``str(error)`` is a one-line human message."""

    kind: ErrorKind = ErrorKind.GENERIC
    #: Whether another attempt may succeed (connection trouble, timeouts, 408/425/429/5xx).
    retryable: bool = False

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url


class ConnectionFailedError(DownloadError):
    """The connection failed or broke before the whole body arrived."""

    kind = ErrorKind.CONNECTION
    retryable = True


class IncompleteBodyError(ConnectionFailedError):
    """The body did not have the length the server announced."""


class DownloadTimeoutError(DownloadError):
    """No byte arrived for ``read_timeout`` seconds, or the total ``timeout`` ran out."""

    kind = ErrorKind.TIMEOUT
    retryable = True


class HTTPStatusError(DownloadError):
    """The server answered with a status we cannot use."""

    kind = ErrorKind.HTTP

    #: 408 Request Timeout, 425 Too Early, 429 Too Many Requests and every 5xx may pass.
    RETRYABLE_STATUSES = frozenset({408, 425, 429})

    def __init__(
        self,
        message: str,
        *,
        status: int,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.retry_after = retry_after
        self.retryable = status in self.RETRYABLE_STATUSES or 500 <= status <= 599


class TooManyRedirectsError(HTTPStatusError):
    """The server kept redirecting: a redirect loop, or more redirects than allowed."""

    retryable = False


class FileSystemError(DownloadError):
    """The file could not be written where it belongs."""

    kind = ErrorKind.FILE


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not match the expected checksum."""

    kind = ErrorKind.CHECKSUM


class ProcessingError(DownloadError):
    """A processor run after verification (see ``nbdl.Processor``) failed on the file."""

    kind = ErrorKind.PROCESS


class ExtractionError(ProcessingError):
    """An archive could not be extracted: unsafe members, limits exceeded, or a broken file.

    Nothing half-extracted is left at the final folder when this is raised.
    """

    kind = ErrorKind.EXTRACT


_KIND_TO_CLASS: dict[ErrorKind, type[DownloadError]] = {
    ErrorKind.CONNECTION: ConnectionFailedError,
    ErrorKind.TIMEOUT: DownloadTimeoutError,
    ErrorKind.FILE: FileSystemError,
    ErrorKind.CHECKSUM: ChecksumMismatchError,
    ErrorKind.PROCESS: ProcessingError,
    ErrorKind.EXTRACT: ExtractionError,
    ErrorKind.GENERIC: DownloadError,
}


def error_from_info(info: DownloadInfo) -> DownloadError:
    """Rebuild the exception a failed download stands for, from its record."""
    message = info.error or "download failed"
    if info.error_kind is ErrorKind.HTTP:
        cls = TooManyRedirectsError if "redirect" in message else HTTPStatusError
        return cls(message, status=info.http_status or 0, url=info.url)
    cls_ = _KIND_TO_CLASS.get(info.error_kind or ErrorKind.GENERIC, DownloadError)
    return cls_(message, url=info.url)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit alone takes "²", which float() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@contextlib.contextmanager
def file_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an OSError of the local file system into a ``FileSystemError`` naming ``path``.

    Errors that are ours already, and aiohttp's (some are OSErrors), pass unchanged.
    """
    try:
        yield
    except (DownloadError, aiohttp.ClientError):
        raise
    except OSError as exc:
        raise file_error(path, exc) from exc


def file_error(path: str | os.PathLike[str], exc: OSError) -> FileSystemError:
    """A ``FileSystemError`` naming ``path`` for an OSError of the local file system."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOTDIR or (exc.errno == errno.EEXIST and not os.path.isdir(path)):
        reason = "a file is in the way of the folder"
    return FileSystemError(f"cannot write {path}: {reason}")


def http_error(status: int, reason: str | None, headers: object, url: str) -> HTTPStatusError:
    """The error for an unusable HTTP answer, e.g. ``HTTP 404 Not Found``."""
    retry_after = None
    if hasattr(headers, "get"):
        retry_after = parse_retry_after(headers.get("Retry-After"))
    message = f"HTTP {status} {reason}" if reason else f"HTTP {status}"
    return HTTPStatusError(message, status=status, url=url, retry_after=retry_after)


def translate(exc: BaseException, url: str) -> DownloadError:
    """Map an exception raised while talking to a server to nbdl's tree.

    This is the only place that knows aiohttp's exception classes; the order matters because
    aiohttp's timeout and OS errors are also ``ClientConnectionError`` and ``OSError``.
    """
    if isinstance(exc, DownloadError):
        return exc
    if isinstance(exc, aiohttp.TooManyRedirects):
        hops = len(exc.history)
        return TooManyRedirectsError(
            f"too many redirects ({hops} hops; a redirect loop?)",
            status=exc.status or 0,
            url=url,
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        # We never call raise_for_status, so aiohttp raises this only for answers it could not
        # parse (garbage on a reused connection, bad headers): a transport fault worth a retry.
        return ConnectionFailedError(f"invalid HTTP response: {_first_line(exc)}", url=url)
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError | TimeoutError):
        detail = str(exc) or "no data received in time"
        return DownloadTimeoutError(f"timed out: {detail}", url=url)
    if isinstance(exc, aiohttp.ClientPayloadError):
        # aiohttp's text nests reprs of its parser errors; the gist is enough for a person.
        return ConnectionFailedError("connection closed before the body was complete", url=url)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionFailedError("server disconnected", url=url)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectionFailedError(f"cannot connect: {_first_line(exc)}", url=url)
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        return ConnectionFailedError(f"connection error: {_first_line(exc)}", url=url)
    if isinstance(exc, aiohttp.InvalidURL):
        return DownloadError(f"invalid URL: {_first_line(exc)}", url=url)
    if isinstance(exc, aiohttp.ClientError):
        return DownloadError(f"HTTP client error: {_first_line(exc)}", url=url)
    return DownloadError(f"unexpected error: {type(exc).__name__}: {_first_line(exc)}", url=url)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """One short printable line: errors end up in tables, logs and widget cells."""
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    return line if len(line) <= limit else line[: limit - 1] + "…"
