"""Segmented downloads: one file fetched as N byte ranges over N connections, verified whole.

A file is split only when the first response allows it: ``200`` with a length,
``Accept-Ranges: bytes``, no content coding and a validator (a strong ``ETag`` or
``Last-Modified``).  The file is cut into pieces, a few per connection
(:data:`PIECES_PER_CONNECTION`); N connections each take the next piece in turn, so a fast
connection does more of the work.  The first response is kept and read for the first piece;
every other piece is a closed ``Range`` request with ``If-Range``.  Each answer must be ``206``
with exactly the ``Content-Range`` asked for and the same validator; anything else raises
:class:`Fallback`, and the worker discards the partial file and downloads the whole file again
in one stream from byte zero.  So a server that ignores ``Range`` half-way, or a resource that
changes between pieces, gives a correct file (the new version, in one stream) or a clean
failure, never a file stitched from two versions.

Bytes go with ``os.pwrite`` into ``<name>.part``, preallocated to the full size.  The progress of
every segment is kept in the resume record (``_state.Record.segments``, saved before the first
byte, every second while running, and when the attempt ends), so after a failure, a cancel or a
killed process each segment resumes from its own offset.  When every segment is complete the file
is checked as a whole (size, and the checksum if one was given, by reading it back once) and
renamed to its final name.

How many connections: ``segments=N`` asks for up to N; ``None`` (the default) means automatic:
files of at least :data:`AUTO_MIN_BYTES` are cut into pieces for :data:`AUTO_SEGMENTS`
connections, but the extra connections open only if the first one turns out slow
(:data:`AUTO_FAST_BYTES`).  Either way each piece has at least :data:`MIN_SEGMENT_BYTES`, and
there are never more connections than the session's per-host cap (``max_per_host``), which
keeps the total number of connections to one host polite.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from . import _files, _state
from ._errors import FileSystemError, IncompleteBodyError, file_error
from ._headers import parse_content_range
from ._models import DownloadStatus, PatchDownloadInfo
from ._urls import redact_url

if TYPE_CHECKING:
    from ._worker import DownloadWorker, Report, WorkItem

#: Automatic splitting starts at this size: below it, the extra requests cost more than they save.
AUTO_MIN_BYTES = 64 * 1024 * 1024
#: Connections used when splitting automatically.
AUTO_SEGMENTS = 4
#: Automatic splitting watches the first connection this long, and adds the others only when it
#: brings less than :data:`AUTO_FAST_BYTES` per second: on a fast link (or loopback, where one
#: stream is CPU-bound) more connections only cost CPU; behind a per-connection cap they pay off.
AUTO_PROBE_SECONDS = 0.5
AUTO_FAST_BYTES = 64 * 1024 * 1024
#: Pieces per connection: a connection that finishes early takes over work, and each piece
#: is a request of its own (servers limiting the rate per request, as nginx does, send faster).
PIECES_PER_CONNECTION = 4
#: No segment is smaller than this (a range request costs a round trip and a connection).
MIN_SEGMENT_BYTES = 1024 * 1024
#: Seconds between saves of the segments' progress while they run.
SAVE_EVERY = 1.0


class Fallback(Exception):
    """The server's answers cannot be stitched together: download in one stream from zero."""


@dataclass(slots=True)
class Segment:
    """Bytes ``start`` to ``end`` (exclusive) of the file; ``done`` of them are on disk."""

    start: int
    end: int
    done: int = 0

    @property
    def position(self) -> int:
        """The next byte to fetch."""
        return self.start + self.done

    @property
    def complete(self) -> bool:
        """True when every byte of the segment is on disk."""
        return self.position >= self.end


def split(total: int, connections: int) -> list[Segment]:
    """Pieces of (nearly) equal size covering ``total`` bytes, a few per connection."""
    count = max(connections, min(connections * PIECES_PER_CONNECTION, total // MIN_SEGMENT_BYTES))
    size = total // count
    bounds = [i * size for i in range(count)] + [total]
    return [Segment(bounds[i], bounds[i + 1]) for i in range(count)]


def segment_count(
    resp: aiohttp.ClientResponse,
    total: int | None,
    wanted: int | None,
    session: aiohttp.ClientSession,
) -> int:
    """How many connections to use for the 200 answer ``resp`` (1: do not split)."""
    if resp.status != 200 or total is None or wanted == 1:
        return 1
    if "bytes" not in resp.headers.get("Accept-Ranges", "").lower():
        return 1
    if wanted is None:
        if total < AUTO_MIN_BYTES:
            return 1
        wanted = AUTO_SEGMENTS
    return _cap(min(wanted, total // MIN_SEGMENT_BYTES), session)


def _cap(count: int, session: aiohttp.ClientSession) -> int:
    cap = getattr(session.connector, "limit_per_host", 0)
    if cap:
        count = min(count, cap)
    return max(count, 1)


async def download(
    worker: DownloadWorker,
    session: aiohttp.ClientSession,
    item: WorkItem,
    report: Report,
    record: _state.Record,
    *,
    first: aiohttp.ClientResponse | None = None,
    count: int = 0,
) -> int:
    """Fetch ``item`` in segments into its partial file, verify it and rename it; the size.

    With ``first`` (the 200 response of a fresh download) the file is split into pieces fetched
    over ``count`` connections, and ``first`` feeds the first piece; without it, the pieces of
    ``record`` resume.  Raises :class:`Fallback` when the server's answers cannot be used.
    """
    total = record.total
    if total is None or record.validator is None:
        raise Fallback("no length or validator to split on")
    part = _state.part_path(item.path)
    if first is not None:
        segments = split(total, count)
    else:
        segments = [Segment(int(a), int(b), int(c)) for a, b, c in record.segments or []]
        segments.sort(key=lambda seg: seg.start)
        if not _covers(segments, total):
            raise Fallback("the saved segments do not cover the file")
        wanted = item.config.segments or worker.segments or AUTO_SEGMENTS
        count = _cap(wanted, session)
    with _file_errors(part):
        fd = _open_part(part, item.dest, total, fresh=first is not None)
    try:
        if first is None and os.fstat(fd).st_size != total:
            for seg in segments:  # the partial file was replaced: nothing on disk is usable
                seg.done = 0
            with _file_errors(part):
                _allocate(fd, total)
        run = _Run(worker, session, item, report, record, segments, fd, part, first, count)
        chosen = item.config.segments if item.config.segments is not None else worker.segments
        run.adaptive = first is not None and chosen is None
        await run.all()
        return await _finish(item, part, fd, total, segments)
    finally:
        os.close(fd)


class _Run:
    """The segments of one attempt, their shared progress, and the record that persists it."""

    def __init__(
        self,
        worker: DownloadWorker,
        session: aiohttp.ClientSession,
        item: WorkItem,
        report: Report,
        record: _state.Record,
        segments: list[Segment],
        fd: int,
        part: Path,
        first: aiohttp.ClientResponse | None,
        connections: int,
    ) -> None:
        self.worker = worker
        self.first = first
        #: Pieces go to where the first answer came from (redirects followed once, not per
        #: piece); a resumed run starts again from the item's URL.
        self.target = str(first.url) if first is not None else item.source
        self.connections = connections
        #: Pieces not started yet, in file order; each connection takes the next one.
        self.pending = collections.deque(seg for seg in segments if not seg.complete)
        self.session = session
        self.item = item
        self.report = report
        self.record = record
        self.segments = segments
        self.fd = fd
        self.part = part
        self.done = sum(seg.done for seg in segments)
        self.saved = -1
        #: Automatic splitting: extra connections only if the first one is slow.
        self.adaptive = False

    async def all(self) -> None:
        self.save()
        self.report(
            PatchDownloadInfo(
                status=DownloadStatus.IN_PROGRESS,
                total_bytes=self.record.total,
                bytes_downloaded=self.done,
                resumed_from=self.done,
            )
        )
        saver = asyncio.create_task(self._save_periodically())
        try:
            lanes = min(self.connections, len(self.pending))
            async with asyncio.TaskGroup() as group:
                if self.first is not None and self.pending:
                    group.create_task(self._lane(self.pending.popleft(), self.first))
                    lanes -= 1
                if self.adaptive and lanes > 0:
                    group.create_task(self._add_lanes_if_slow(group, lanes))
                else:
                    for _ in range(lanes):
                        group.create_task(self._lane(None, None))
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None
        finally:
            saver.cancel()
            if not all(seg.complete for seg in self.segments):
                with contextlib.suppress(OSError):
                    self.save()

    def save(self) -> None:
        if self.done == self.saved:
            return
        spans = [[seg.start, seg.end, seg.done] for seg in self.segments]
        self.item.save_record(replace(self.record, segments=spans))
        self.saved = self.done

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY)
            with contextlib.suppress(OSError):
                self.save()

    async def _add_lanes_if_slow(self, group: asyncio.TaskGroup, lanes: int) -> None:
        started, before = time.monotonic(), self.done
        await asyncio.sleep(AUTO_PROBE_SECONDS)
        rate = (self.done - before) / max(time.monotonic() - started, 1e-6)
        if not self.pending or rate >= AUTO_FAST_BYTES:
            return
        for _ in range(lanes):
            group.create_task(self._lane(None, None))

    async def _lane(self, seg: Segment | None, resp: aiohttp.ClientResponse | None) -> None:
        """One connection: the first answer's piece if given, then the next pieces in turn."""
        if seg is not None and resp is not None:
            try:
                await self._read(seg, resp)
            finally:
                resp.close()  # the rest of the first answer belongs to other pieces
        while self.pending:
            await self._segment(self.pending.popleft())

    async def _segment(self, seg: Segment) -> None:
        worker = self.worker
        headers = {
            "Accept-Encoding": "identity",
            **self.item.headers,
            "Range": f"bytes={seg.position}-{seg.end - 1}",
            "If-Range": self.record.validator or "",
        }
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=worker.connect_timeout, sock_read=worker.read_timeout
        )
        async with self.session.get(
            self.target,
            headers=headers,
            timeout=timeout,
            allow_redirects=True,
            max_redirects=worker.max_redirects,
        ) as answer:
            self._check(answer, seg)
            await self._read(seg, answer)

    def _check(self, resp: aiohttp.ClientResponse, seg: Segment) -> None:
        """Raise :class:`Fallback` unless ``resp`` is exactly the range asked for, same version."""
        if resp.status != 206:
            raise Fallback(f"a range request was answered with HTTP {resp.status}")
        wanted = (seg.position, seg.end - 1, self.record.total)
        if parse_content_range(resp.headers.get("Content-Range")) != wanted:
            raise Fallback(
                f"a range request got Content-Range {resp.headers.get('Content-Range')!r}"
            )
        if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise Fallback("a range answer was content-encoded")
        length = resp.content_length
        if length is not None and length != seg.end - seg.position:
            raise Fallback("a range answer has the wrong Content-Length")
        record = self.record
        if record.validator == record.etag:
            same = resp.headers.get("ETag") == record.etag
        else:
            same = resp.headers.get("Last-Modified") == record.last_modified
        if not same:
            raise Fallback("the resource changed between segments")

    async def _read(self, seg: Segment, resp: aiohttp.ClientResponse) -> None:
        read = resp.content.read
        size = self.worker.chunk_size
        fd, pwrite, report = self.fd, os.pwrite, self.report
        position = seg.position
        while position < seg.end:
            chunk = await read(min(size, seg.end - position))
            if not chunk:
                raise IncompleteBodyError(
                    f"a segment ended after {seg.done} of {seg.end - seg.start} bytes",
                    url=redact_url(self.item.url),
                )
            with _file_errors(self.part):
                written = pwrite(fd, chunk, position)
            if written != len(chunk):
                raise FileSystemError(f"cannot write {self.part}: short write")
            position += written
            seg.done += written
            self.done += written
            report(PatchDownloadInfo(bytes_downloaded=self.done))


def _covers(segments: list[Segment], total: int) -> bool:
    """True when the sorted ``segments`` tile ``0..total`` with no gap or overlap."""
    position = 0
    for seg in segments:
        if (
            seg.start != position
            or seg.end <= seg.start
            or not 0 <= seg.done <= seg.end - seg.start
        ):
            return False
        position = seg.end
    return position == total


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report for a failed attempt: a fallback first, else the first real error."""
    errors: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        elif not isinstance(exc, asyncio.CancelledError):
            errors.append(exc)
    for exc in errors:
        if isinstance(exc, Fallback):
            return exc
    return errors[0] if errors else asyncio.CancelledError()


def _open_part(part: Path, dest: Path, total: int, *, fresh: bool) -> int:
    fd = _files.open_part(part, dest, resume=not fresh)
    if fresh:
        try:
            _allocate(fd, total)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _allocate(fd: int, total: int) -> None:
    """Reserve the whole file: a full disk fails now, not at 90 %."""
    try:
        os.posix_fallocate(fd, 0, total)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL
            raise
        os.ftruncate(fd, total)


async def _finish(item: WorkItem, part: Path, fd: int, total: int, segments: list[Segment]) -> int:
    done = sum(seg.done for seg in segments)
    size = os.fstat(fd).st_size
    if done != total or size != total or not all(seg.complete for seg in segments):
        raise IncompleteBodyError(
            f"the segments hold {done} of {total} bytes", url=redact_url(item.url)
        )
    if item.checksum is not None:
        item.check_digest(await asyncio.to_thread(_hash_fd, fd, item.checksum.new_hasher(), total))
    with _file_errors(item.path):
        _files.check_final(item.path)
        os.replace(part, item.path)
    return total


def _hash_fd(fd: int, hasher: hashlib._Hash, total: int) -> str:
    _state.hash_prefix(fd, hasher, total)
    return hasher.hexdigest()


@contextlib.contextmanager
def _file_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if isinstance(exc, aiohttp.ClientError):
            raise
        raise file_error(path, exc) from exc
