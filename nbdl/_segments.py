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

How many connections: ``segments=N`` asks for up to N, all at once.  ``None`` (the default)
means automatic, for files of at least :data:`AUTO_MIN_BYTES`: the file is cut into pieces for
as many connections as the per-host cap allows, and the first answer keeps streaming piece after
piece while nobody else takes them, so on a fast link (or loopback, where one stream is
CPU-bound) the file arrives in one stream with no extra request.  Every
:data:`AUTO_PROBE_SECONDS` of data the rate is checked: if one connection is slower than
:data:`AUTO_FAST_BYTES`, more are opened (x :data:`AUTO_GROWTH` each step) for as long as each
step raises the total rate by :data:`AUTO_GAIN` and the host has connections to spare.  Behind a
server capping each connection that reaches the cap in two or three steps of a fraction of a
second; where the link itself is the limit it stops after one step.  A connection that looks
fast is watched on: a server's first burst (nginx sends a second's worth of its rate limit at
once) must not hide a cap.  When no piece is left to start, a free connection takes the second
half of the largest piece still being read (:func:`_Run._next_piece`), so the end of a file
does not wait on one slow connection.  Either way each piece has
at least :data:`MIN_SEGMENT_BYTES`, and there are never more connections than the session's
per-host cap (``max_per_host``), which keeps the total number of connections to one host polite.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from . import _files, _state
from ._body import Body
from ._errors import FileSystemError, IncompleteBodyError, file_errors
from ._headers import parse_content_range
from ._models import DownloadStatus, PatchDownloadInfo
from ._urls import origin, redact_url

if TYPE_CHECKING:
    from ._worker import DownloadWorker, Report, WorkItem

#: Automatic splitting starts at this size: below it, a file takes too few windows to ramp up in.
AUTO_MIN_BYTES = 8 * 1024 * 1024
#: Connections a resumed automatic download starts with (its first rate is not known).
AUTO_SEGMENTS = 4
#: Automatic splitting measures the rate over windows this long, or twice the time new
#: connections took to bring their first bytes if that is longer (a distant server's new
#: connections need a few round trips to get up to speed); a window starts once they all flow.
AUTO_PROBE_SECONDS = 0.05
#: A connection this fast is left alone: on a fast link (or loopback, where one stream is
#: CPU-bound) more connections only cost CPU; behind a per-connection cap they pay off.
AUTO_FAST_BYTES = 64 * 1024 * 1024
#: Each ramp-up step multiplies the connections by this much ...
AUTO_GROWTH = 4
#: ... and the next step is taken only if this one multiplied the total rate by at least this.
AUTO_GAIN = 1.5
#: Pieces per connection: a connection that finishes early takes over work, and each piece
#: is a request of its own (servers limiting the rate per request, as nginx does, send faster:
#: nginx allows each request one second's worth at once, so with 4 MiB/s per connection a piece
#: of 2 MiB came in 0.01-0.07 s and one of 4 MiB, a little over the allowance, in 0.53 s).
PIECES_PER_CONNECTION = 8
#: No segment is smaller than this (a range request costs a round trip and a connection).
MIN_SEGMENT_BYTES = 1024 * 1024
#: A piece being read is split for an idle connection only if its rest is at least twice this ...
STEAL_MIN_BYTES = 256 * 1024
#: ... and would take its reader at least this long at the run's rate per connection.
STEAL_MIN_SECONDS = 0.2
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
    """How many connections to use for the 200 answer ``resp`` (1: do not split).

    For automatic splitting (``wanted`` None) this is the most the ramp-up may reach.
    """
    if resp.status != 200 or total is None or wanted == 1:
        return 1
    if "bytes" not in resp.headers.get("Accept-Ranges", "").lower():
        return 1
    if wanted is None:
        if total < AUTO_MIN_BYTES:
            return 1
        wanted = total // MIN_SEGMENT_BYTES  # the per-host cap decides
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
    with file_errors(part):
        fd = _open_part(part, item.dest, total, fresh=first is not None)
    try:
        if first is None and os.fstat(fd).st_size != total:
            for seg in segments:  # the partial file was replaced: nothing on disk is usable
                seg.done = 0
            with file_errors(part):
                _allocate(fd, total)
        run = _Run(worker, session, item, report, record, segments, fd, part, first, count)
        chosen = item.config.segments if item.config.segments is not None else worker.segments
        run.adaptive = first is not None and chosen is None
        await run.all()
        return await _finish(run, total)
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Lane:
    """One connection's state within a run."""

    #: True once it brought bytes (the ramp-up measures only connections that are running).
    flowing: bool = False


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
        #: Automatic splitting: extra connections only while they help (``_ramp_up``).
        self.adaptive = False
        #: Connections that brought bytes in this attempt (the ramp-up waits for new ones).
        self.flowing = 0
        #: Set when a connection starts bringing bytes or ends.
        self.lanes_changed = asyncio.Event()
        #: Pieces being read now (the end of the largest may be taken by an idle connection).
        self.reading: list[Segment] = []
        self.started = time.monotonic()
        self.done_at_start = self.done
        #: The checksum is fed on the fly while bytes arrive in order from byte zero (the first
        #: answer on a fast link: the whole file); ``hashed`` bytes are in it, the rest is
        #: read back from the file at the end.
        self.hasher = item.checksum.new_hasher() if item.checksum is not None else None
        self.hashed = 0

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
                    group.create_task(self._ramp_up(group))
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

    async def _ramp_up(self, group: asyncio.TaskGroup) -> None:
        """Add connections while they make the file arrive faster (see the module's docstring)."""
        lanes = 1
        window = AUTO_PROBE_SECONDS
        rate = await self._rate(window)
        total = self.record.total or 0
        while self.pending:
            if lanes == 1 and rate >= AUTO_FAST_BYTES:
                # One fast connection: look again, for a server's first burst (nginx sends a
                # second's worth of its rate limit at once) can make a capped one look fast.
                # Once more connections have paid off, only AUTO_GAIN decides: four capped
                # connections answering pieces in bursts can add up to more than this.
                rate = await self._rate(window)
                continue
            if (total - self.done) < rate * 2 * window:
                return  # nearly done: a new connection would arrive too late to help
            # Connections to the host left under the cap (other files of the batch hold some).
            spare = self.connections - self.worker.busy[origin(self.target)]
            added = min(lanes * (AUTO_GROWTH - 1), self.connections - lanes, spare)
            added = min(added, len(self.pending))
            if added <= 0:
                return
            for _ in range(added):
                group.create_task(self._lane(None, None))
            lanes += added
            started = time.monotonic()
            await self._until_flowing(lanes)
            window = max(AUTO_PROBE_SECONDS, 2 * (time.monotonic() - started))
            before, rate = rate, await self._rate(window)
            if rate < before * AUTO_GAIN:
                return  # the link, not the connection, is the limit: more would only cost

    async def _rate(self, window: float) -> float:
        """Bytes per second arriving over the next ``window`` seconds."""
        started, before = time.monotonic(), self.done
        await asyncio.sleep(window)
        return (self.done - before) / max(time.monotonic() - started, 1e-6)

    async def _until_flowing(self, lanes: int) -> None:
        """Wait until ``lanes`` connections brought bytes (or no piece is left to start)."""
        while self.flowing < lanes and self.pending:
            self.lanes_changed.clear()
            await self.lanes_changed.wait()

    async def _lane(self, seg: Segment | None, resp: aiohttp.ClientResponse | None) -> None:
        """One connection: the first answer's piece if given, then the next pieces in turn."""
        lane = _Lane()
        try:
            if seg is not None and resp is not None:
                try:
                    body = Body(resp)
                    with self._reading(seg):
                        await self._read(seg, body, lane)
                    # The first answer carries the whole file: it goes on into the next piece
                    # while no other connection has taken it, so a fast link needs one request
                    # (what a read brought beyond a piece's end begins the next one).
                    while self.pending and self.pending[0].position == seg.end:
                        seg = self.pending.popleft()
                        with self._reading(seg):
                            await self._read(seg, body, lane)
                finally:
                    resp.close()  # the rest of the first answer belongs to other pieces
            while (next_seg := self._next_piece()) is not None:
                await self._segment(next_seg, lane)
        finally:
            self.lanes_changed.set()

    def _next_piece(self) -> Segment | None:
        """The next piece to fetch: one not started, else half of the largest one being read.

        Splitting at the end keeps the last bytes of a file from waiting on one slow connection
        (behind a per-connection cap, a 2 MiB piece takes 0.5 s while the others sit idle).
        Only a remainder that would take the reader at least :data:`STEAL_MIN_SECONDS` at the
        run's average rate per connection is split: a new request costs a round trip.
        """
        if self.pending:
            return self.pending.popleft()
        victim = max(self.reading, key=lambda seg: seg.end - seg.position, default=None)
        if victim is None:
            return None
        left = victim.end - victim.position
        elapsed = time.monotonic() - self.started
        per_connection = (self.done - self.done_at_start) / max(elapsed, 1e-3) / len(self.reading)
        if left < 2 * STEAL_MIN_BYTES or left < per_connection * STEAL_MIN_SECONDS:
            return None
        cut = victim.end - left // 2
        stolen = Segment(cut, victim.end)
        victim.end = cut  # its reader stops there (see _read)
        self.segments.append(stolen)
        return stolen

    async def _segment(self, seg: Segment, lane: _Lane) -> None:
        worker = self.worker
        # The range asked for: the piece's end can move (another connection may take half).
        start, end = seg.position, seg.end
        headers = {
            "Accept-Encoding": "identity",
            **self.item.headers,
            "Range": f"bytes={start}-{end - 1}",
            "If-Range": self.record.validator or "",
        }
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=worker.connect_timeout, sock_read=worker.read_timeout
        )
        busy, host = worker.busy, origin(self.target)
        busy[host] += 1
        try:
            with self._reading(seg):
                async with self.session.get(
                    self.target,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=True,
                    max_redirects=worker.max_redirects,
                ) as answer:
                    self._check(answer, start, end)
                    await self._read(seg, Body(answer), lane)
                    if seg.end != end:
                        answer.close()  # the rest of the answer went to another connection
        finally:
            busy[host] -= 1

    def _check(self, resp: aiohttp.ClientResponse, start: int, end: int) -> None:
        """Raise :class:`Fallback` unless ``resp`` is exactly the range asked for, same version."""
        if resp.status != 206:
            raise Fallback(f"a range request was answered with HTTP {resp.status}")
        wanted = (start, end - 1, self.record.total)
        if parse_content_range(resp.headers.get("Content-Range")) != wanted:
            raise Fallback(
                f"a range request got Content-Range {resp.headers.get('Content-Range')!r}"
            )
        if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise Fallback("a range answer was content-encoded")
        length = resp.content_length
        if length is not None and length != end - start:
            raise Fallback("a range answer has the wrong Content-Length")
        record = self.record
        if record.validator == record.etag:
            same = resp.headers.get("ETag") == record.etag
        else:
            same = resp.headers.get("Last-Modified") == record.last_modified
        if not same:
            raise Fallback("the resource changed between segments")

    @contextlib.contextmanager
    def _reading(self, seg: Segment) -> Iterator[None]:
        """``seg`` is taken by a connection (asked for or being read): others may split it."""
        self.reading.append(seg)
        try:
            yield
        finally:
            self.reading = [taken for taken in self.reading if taken is not seg]

    async def _read(self, seg: Segment, body: Body, lane: _Lane) -> None:
        """Write ``body``'s bytes for ``seg`` until the piece's end (which may move nearer)."""
        # Writes stay on the event loop: a writer thread (tried 2026-12-03) cost more CPU in
        # hand-overs than it saved, 1 GiB from loopback took 1.1-2.4 s with it, 0.87-1.4 s without.
        read = body.read
        size = self.worker.chunk_size
        fd, pwrite, report, hasher = self.fd, os.pwrite, self.report, self.hasher
        position = seg.position
        while position < seg.end:
            chunk = await read(min(size, seg.end - position))
            if not chunk:
                raise IncompleteBodyError(
                    f"a segment ended after {seg.done} of {seg.end - seg.start} bytes",
                    url=redact_url(self.item.url),
                )
            if len(chunk) > seg.end - position:  # the end moved while this read waited
                chunk = chunk[: seg.end - position]
            if not lane.flowing:
                lane.flowing = True
                self.flowing += 1
                self.lanes_changed.set()
            with file_errors(self.part):
                written = pwrite(fd, chunk, position)
            if written != len(chunk):
                raise FileSystemError(f"cannot write {self.part}: short write")
            if hasher is not None and position == self.hashed:
                hasher.update(chunk)
                self.hashed += written
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


async def _finish(run: _Run, total: int) -> int:
    item, segments = run.item, run.segments
    done = sum(seg.done for seg in segments)
    size = os.fstat(run.fd).st_size
    if done != total or size != total or not all(seg.complete for seg in segments):
        raise IncompleteBodyError(
            f"the segments hold {done} of {total} bytes", url=redact_url(item.url)
        )
    if run.hasher is not None:
        if run.hashed < total:
            await asyncio.to_thread(_state.hash_range, run.fd, run.hasher, run.hashed, total)
        item.check_digest(run.hasher.hexdigest())
    with file_errors(item.path):
        _files.check_final(item.path)
        os.replace(run.part, item.path)
    return total
