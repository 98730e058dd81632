"""Terminal trackers: ``RichTracker`` (a live Rich display) and ``LogTracker`` (plain lines).

Both build on ``DownloadTracker``.  ``patch_download`` arrives once per chunk, so it only updates
a few running totals and remembers which downloads changed status; all drawing happens on one
throttled timer (``RichTracker``) or once per finished file (``LogTracker``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID
from rich.table import Column, Table
from rich.text import Text

from ._models import DownloadInfo, DownloadStatus, PatchDownloadInfo, format_bytes
from ._tracker import DownloadTracker

__all__ = ["LogTracker", "RichTracker"]

#: What writing to a terminal or pipe that went away raises (ValueError: a closed file).
_BROKEN_OUTPUT = (OSError, ValueError)
_ACTIVE = frozenset({DownloadStatus.PENDING, DownloadStatus.IN_PROGRESS, DownloadStatus.PROCESSING})
_LOST = frozenset({DownloadStatus.FAILED, DownloadStatus.CANCELLED})
_NOTED = frozenset({DownloadStatus.PENDING, DownloadStatus.PROCESSING})
#: Failures printed one by one before the rest are left to the summary (a batch of 10,000
#: failing files must not flood the terminal).
_MAX_FAILURE_LINES = 20
#: Seconds of history behind the overall speed: long enough to be steady, short enough to
#: show a stall.
_SPEED_WINDOW = 5.0
#: Cells of the live rows: name (with the gap after it), then size, speed and time left (each
#: after a one-cell gap); the bar takes what is left.
_NAME_WIDTH = 33
_SIZE_WIDTH, _SPEED_WIDTH, _ETA_WIDTH = 21, 11, 7
_STATS_WIDTH = 3 + _SIZE_WIDTH + _SPEED_WIDTH + _ETA_WIDTH


def _clean(text: str) -> str:
    """``text`` without control characters (a server-given error must not drive the terminal)."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class _Totals:
    """Running sums over every download, kept up to date in O(1) per patch."""

    __slots__ = ("count", "done_bytes", "known", "known_total", "transferred")

    def __init__(self) -> None:
        self.count = 0
        self.done_bytes = 0
        #: Bytes received in this run (resumed and already-present bytes excluded): for speed.
        self.transferred = 0
        self.known = 0
        self.known_total = 0

    def add(self, info: DownloadInfo, sign: int) -> None:
        self.done_bytes += sign * info.bytes_downloaded
        self.transferred += sign * (info.bytes_downloaded - info.resumed_from)
        if info.total_bytes is not None:
            self.known += sign
            self.known_total += sign * info.total_bytes


# -- columns ---------------------------------------------------------------------------------
# The overall row carries its own speed and ETA in task fields (Rich's per-task estimate would
# count resumed and already-present bytes as speed); file rows use Rich's estimate.


class _NameColumn(ProgressColumn):
    """The file name (or the overall label), with a dim note such as a pending retry."""

    def render(self, task: Task) -> Text:
        text = Text(str(task.fields.get("label", "")), style=str(task.fields.get("style", "")))
        note = task.fields.get("note")
        if note:
            text.append(f" {note}", style="dim")
        # The cells have no padding (see _Display): the gap before the bar is the name's own.
        text.truncate(_NAME_WIDTH - 1, overflow="ellipsis")
        text.append(" ")
        return text


class _StatsColumn(ProgressColumn):
    """``12.0 MiB/40.0 MiB   1.0 MiB/s  0:00:28``, as one cell: ``~`` marks an estimated total.

    Bytes, speed and time left share a cell because every cell of a Rich table costs a layout
    pass of its own; with unpadded cells (see ``_Display``) a frame of 11 rows went from
    ~2.8 ms to ~1.3 ms.
    """

    def render(self, task: Task) -> Text:
        done = format_bytes(task.completed)
        if task.total is None:
            size = done
        else:
            mark = "~" if task.fields.get("estimate") else ""
            size = f"{done}/{mark}{format_bytes(task.total)}"
        speed = task.fields.get("speed", task.speed)
        rate = f"{format_bytes(speed)}/s" if speed else ""
        eta = task.fields.get("eta", task.time_remaining)
        left = "" if eta is None or task.total is None else _format_duration(eta)
        return Text.assemble(
            (f" {size:>{_SIZE_WIDTH}}", "progress.download"),
            (f" {rate:>{_SPEED_WIDTH}}", "progress.data.speed"),
            (f" {left:>{_ETA_WIDTH}}", "progress.remaining"),
        )


class _Display(Progress):
    """The progress table, then a line for active files beyond the row limit."""

    hidden = 0
    #: Set when the batch ends: ``stop()`` draws one last frame only to erase it (the display
    #: is transient), and an empty one costs nothing to lay out.
    closing = False

    def refresh(self) -> None:
        """Ignored: Rich redraws on every ``add_task``; the tracker redraws on its timer."""

    def redraw(self) -> None:
        """Draw the rows now."""
        super().refresh()

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        """The rows as a grid without cell padding (the columns carry their own gaps).

        Rich's own table pads every cell, and a padded cell costs a second layout pass.
        """
        columns = [column for column in self.columns if not isinstance(column, str)]
        table = Table.grid(
            *(column.get_table_column().copy() for column in columns), expand=self.expand
        )
        for task in tasks:
            if task.visible:
                table.add_row(*(column(task) for column in columns))
        return table

    def get_renderables(self) -> Iterable[RenderableType]:
        if self.closing:
            return
        yield self.make_tasks_table(self.tasks)
        if self.hidden:
            rows = len(self.tasks) > 1  # the overall row is always there
            more = "more " if rows else ""
            files = "file" if self.hidden == 1 else "files"
            yield Text(f"… and {self.hidden} {more}active {files} without a row", style="dim")


class RichTracker(DownloadTracker):
    """A live terminal display: one row per active file, an overall row, failures, a summary.

    Only active downloads get a row (at most ``max_rows``, then one line counts the others), and
    finished rows are removed, so 10,000 files neither slow it down nor fill the screen.  A file
    gets its row once it has been active for ``row_delay`` seconds: a batch of small files does
    not flash rows nobody can read (the overall row shows its progress), while a large file gets
    its row within a second.  A failure is printed with its error as it happens; ``close``
    prints a summary table.

    The display is redrawn ``refresh_per_second`` times a second by one timer on the running
    event loop, never per chunk.  Without a running loop (tests, custom drivers) call
    :meth:`refresh` yourself.  ``console`` and ``clock`` can be injected for tests.
    """

    def __init__(
        self,
        *,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_per_second: float = 4.0,
        max_rows: int = 10,
        row_delay: float = 0.5,
    ) -> None:
        super().__init__()
        if refresh_per_second <= 0:
            raise ValueError("refresh_per_second must be > 0")
        if max_rows < 0:
            raise ValueError("max_rows must be >= 0")
        if not row_delay >= 0:
            raise ValueError("row_delay must be >= 0 seconds")
        self._row_delay = row_delay
        self.console = console if console is not None else Console()
        self._clock = clock
        self._interval = 1.0 / refresh_per_second
        self._max_rows = max_rows
        self._totals = _Totals()
        # The store marks the URLs that change (``_changed``), and this keeps each URL's record
        # as last added to the totals: the refresh does the sums once per changed file rather
        # than once per chunk.
        self._changed = {}
        self._accounted: dict[str, DownloadInfo] = {}
        self._rows: dict[str, TaskID] = {}
        # Active files without a row, and when the display first saw them active.
        self._waiting: dict[str, float] = {}
        self._settled: set[str] = set()
        self._completed = 0
        self._completed_bytes = 0
        self._failed = 0
        self._cancelled = 0
        self._failure_lines = 0
        # Total bytes that failed or cancelled downloads will never deliver, and how many of
        # those never learnt their size: both leave the overall estimate.
        self._lost_bytes = 0
        self._lost_unknown = 0
        self._speed_samples: collections.deque[tuple[float, int]] = collections.deque()
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._progress = _Display(
            _NameColumn(table_column=Column(width=_NAME_WIDTH, no_wrap=True)),
            BarColumn(bar_width=None, table_column=Column(ratio=1)),
            _StatsColumn(table_column=Column(width=_STATS_WIDTH, no_wrap=True)),
            console=self.console,
            auto_refresh=False,
            speed_estimate_period=_SPEED_WINDOW,
            get_time=clock,
            # The summary table replaces the live rows when the batch ends.
            transient=True,
            expand=True,
        )
        self._overall = self._progress.add_task(
            "overall", total=None, label="Total", style="bold", speed=None, eta=None
        )

    # -- the Tracker protocol: the store records, this draws ---------------------------------
    def start(self) -> None:
        """Show the live display and start the refresh timer."""
        self._started_at = self._clock()
        # The first frame waits for the first tick: a batch of quick files then draws no frame
        # at the start, and each file registered before it is added up once, not twice.
        self._progress.live.start(refresh=False)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self._interval, self._tick, loop)

    def close(self) -> None:
        """Stop the display and print the summary table."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ended_at = self._clock()
        # close() runs in the manager's finally: a dead terminal must not replace the results.
        with contextlib.suppress(*_BROKEN_OUTPUT):
            # Failures not printed yet are printed; stop() then erases the live rows.
            self._update_rows()
        with contextlib.suppress(*_BROKEN_OUTPUT):
            self._progress.closing = True
            self._progress.stop()
            self.console.print(self.summary())

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self.refresh()
        except _BROKEN_OUTPUT:
            # The terminal went away (closed pipe): the downloads go on without a display.
            self._timer = None
            return
        self._timer = loop.call_later(self._interval, self._tick, loop)

    # -- drawing -----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Bring the rows up to date and redraw once; costs O(rows + status changes)."""
        self._update_rows()
        self._progress.redraw()

    def _update_rows(self) -> None:
        now = self._clock()
        changed = self._take_changed()
        totals, accounted, downloads = self._totals, self._accounted, self._downloads
        for url in changed:
            new = downloads[url]
            old = accounted.get(url)
            if new is old:
                continue
            accounted[url] = new
            if old is None:
                totals.count += 1
            else:
                totals.add(old, -1)
            totals.add(new, 1)
            if old is None or new.status is not old.status or new.note != old.note:
                self._on_change(new, now)
        waiting = self._waiting
        while waiting and len(self._rows) < self._max_rows:
            url, since = next(iter(waiting.items()))
            # Files wait in the order they became active, so the first too recent ends it.
            if now - since < self._row_delay:
                break
            del waiting[url]
            self._add_row(downloads[url])
        progress = self._progress
        for url, task_id in self._rows.items():
            info = self._downloads[url]
            progress.update(
                task_id,
                completed=info.bytes_downloaded,
                total=info.total_bytes,
                note=self._note(info),
            )
        self._update_overall()
        progress.hidden = len(self._waiting)

    def _note(self, info: DownloadInfo) -> str | None:
        # A note is worth a row's space only while the file waits (e.g. for a retry) or is
        # being processed ("extracting 40 %").
        if info.status in _NOTED and info.note:
            return f"({_clean(info.note)})"
        return None

    def _on_change(self, info: DownloadInfo, now: float) -> None:
        url = info.url
        if info.status in _ACTIVE:
            if url not in self._rows and url not in self._waiting:
                self._waiting[url] = now
            return
        if not info.is_terminal() or url in self._settled:
            return
        self._settled.add(url)
        task_id = self._rows.pop(url, None)
        if task_id is not None:
            self._progress.remove_task(task_id)
        self._waiting.pop(url, None)
        if info.status is DownloadStatus.COMPLETED:
            self._completed += 1
            self._completed_bytes += info.bytes_downloaded
            return
        if info.status is DownloadStatus.FAILED:
            self._failed += 1
            self._print_failure(info)
        else:
            self._cancelled += 1
        if info.total_bytes is None:
            self._lost_unknown += 1
        else:
            self._lost_bytes += max(0, info.total_bytes - info.bytes_downloaded)

    def _add_row(self, info: DownloadInfo) -> None:
        # A resumed file starts its row at the bytes already on disk: no false speed spike.
        self._rows[info.url] = self._progress.add_task(
            info.filename,
            total=info.total_bytes,
            completed=info.bytes_downloaded,
            label=_clean(info.filename),
            note=self._note(info),
        )

    def _print_failure(self, info: DownloadInfo) -> None:
        self._failure_lines += 1
        if self._failure_lines > _MAX_FAILURE_LINES:
            if self._failure_lines == _MAX_FAILURE_LINES + 1:
                self.console.print(Text("… more failures: see the summary", style="red"))
            return
        line = Text("✗ ", style="bold red")
        line.append(_clean(info.filename), style="bold")
        line.append(f": {_clean(info.error or 'failed')}", style="red")
        self.console.print(line)

    def _update_overall(self) -> None:
        totals = self._totals
        now = self._clock()
        samples = self._speed_samples
        samples.append((now, totals.transferred))
        while len(samples) > 2 and samples[0][0] < now - _SPEED_WINDOW:
            samples.popleft()
        speed: float | None = None
        elapsed = samples[-1][0] - samples[0][0]
        if elapsed > 0:
            speed = max(0.0, (samples[-1][1] - samples[0][1]) / elapsed)

        unknown = totals.count - totals.known - self._lost_unknown
        total: float | None = float(totals.known_total - self._lost_bytes)
        estimate = unknown > 0
        if estimate:
            # Files not started yet are assumed to be as large as the average finished one
            # (else the average known one). Finished files are the better guide: high-priority
            # large files start first and would make the queued small ones look large.
            average = (
                self._completed_bytes / self._completed
                if self._completed
                else totals.known_total / totals.known
                if totals.known
                else None
            )
            total = None if average is None else float(total or 0) + unknown * average
        if total is not None:
            total = max(total, float(totals.done_bytes))
        eta = None
        if total is not None and speed:
            eta = (total - totals.done_bytes) / speed

        settled = self._completed + self._failed + self._cancelled
        label = f"Total {settled}/{totals.count} files"
        if self._failed:
            label += f", {self._failed} failed"
        self._progress.update(
            self._overall,
            completed=totals.done_bytes,
            total=total,
            label=label,
            style="bold red" if self._failed else "bold",
            estimate=estimate,
            speed=speed,
            eta=eta,
        )

    def __rich__(self) -> RenderableType:
        """The live rows as of the last refresh (``console.print(tracker)`` shows them)."""
        return self._progress.get_renderable()

    # -- the end -----------------------------------------------------------------------------
    def summary(self) -> RenderableType:
        """The final summary: counts and bytes by outcome, then the failures with their errors."""
        infos = self.downloads()
        elapsed = 0.0
        if self._started_at is not None:
            elapsed = (self._ended_at or self._clock()) - self._started_at
        groups: dict[str, list[DownloadInfo]] = {
            "downloaded": [],
            "already present": [],
            "failed": [],
            "cancelled": [],
            "not finished": [],
        }
        for info in infos:
            if info.status is DownloadStatus.COMPLETED:
                groups["already present" if info.from_cache else "downloaded"].append(info)
            elif info.status is DownloadStatus.FAILED:
                groups["failed"].append(info)
            elif info.status is DownloadStatus.CANCELLED:
                groups["cancelled"].append(info)
            else:
                groups["not finished"].append(info)
        done = len(groups["downloaded"]) + len(groups["already present"])
        transferred = sum(max(0, i.bytes_downloaded - i.resumed_from) for i in infos)
        title = f"nbdl: {done} of {len(infos)} files completed in {elapsed:.1f} s"
        if elapsed > 0 and transferred:
            title += f" ({format_bytes(transferred / elapsed)}/s)"
        # Every header and cell is a Text: a plain str would be read as console markup, and a
        # file name or a server's error text such as "[/x]" would raise MarkupError at close
        # (and "[link=...]" would become a hyperlink).
        table = Table()
        table.add_column(Text("outcome"))
        table.add_column(Text("files"), justify="right")
        table.add_column(Text("size"), justify="right")
        styles = {"failed": "red", "cancelled": "yellow", "not finished": "yellow"}
        for name, members in groups.items():
            if members:
                size = format_bytes(sum(i.bytes_downloaded for i in members))
                cells = (Text(name), Text(str(len(members))), Text(size))
                table.add_row(*cells, style=styles.get(name, ""))
        parts: list[RenderableType] = [Text(title, style="bold"), table]
        failed = groups["failed"]
        if failed:
            parts.append(Text(f"{len(failed)} failed:", style="bold red"))
            errors = Table()
            errors.add_column(Text("file"), style="bold", overflow="fold")
            errors.add_column(Text("error"), style="red", overflow="fold")
            for info in failed[:_MAX_FAILURE_LINES]:
                errors.add_row(Text(_clean(info.filename)), Text(_clean(info.error or "failed")))
            if len(failed) > _MAX_FAILURE_LINES:
                errors.add_row(Text(f"… and {len(failed) - _MAX_FAILURE_LINES} more"), Text(""))
            parts.append(errors)
        if groups["cancelled"]:
            parts.append(
                Text(
                    "Cancelled: partial files are kept (.part) and resume on the next run.",
                    style="yellow",
                )
            )
        return Group(*parts)


class LogTracker(DownloadTracker):
    """Plain log lines for CI logs and pipes: one per finished or failed file, then a summary.

    No control characters, no redrawing.  Lines go to ``file`` (standard output by default,
    looked up when writing so that redirections made later apply).
    """

    def __init__(self, *, file: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._file = file
        self._clock = clock
        self._started_at: float | None = None
        self._settled = 0
        self._closed = False
        self._broken = False

    def _write(self, line: str) -> None:
        out = self._file if self._file is not None else sys.stdout
        if out is None:  # pythonw and friends have no standard output
            return
        if self._broken:
            return
        try:
            out.write(_clean(line) + "\n")
            out.flush()
        except _BROKEN_OUTPUT:
            # A closed pipe (`nbdl ... | head`) must not fail the downloads that report here.
            self._broken = True

    def patch_download(self, url: str, patch: PatchDownloadInfo) -> None:
        """Record an update; write a line when a download completes or fails."""
        was_terminal = self._downloads[url].is_terminal()
        super().patch_download(url, patch)
        if patch.status is None or was_terminal:
            return
        info = self._downloads[url]
        if info.status is DownloadStatus.COMPLETED:
            self._settled += 1
            self._write(f"{self._counter()} done    {info.filename}  {_describe(info)}")
        elif info.status is DownloadStatus.FAILED:
            self._settled += 1
            self._write(f"{self._counter()} FAILED  {info.filename}  {info.error or 'failed'}")
        elif info.status is DownloadStatus.CANCELLED:
            # Not a line each: a cancel of 10,000 queued files would flood the log.
            self._settled += 1

    def _counter(self) -> str:
        width = len(str(len(self._downloads)))
        return f"[{self._settled:>{width}}/{len(self._downloads)}]"

    def start(self) -> None:
        """Write the first line."""
        self._started_at = self._clock()
        self._write(f"nbdl: downloading {len(self._downloads)} files")

    def close(self) -> None:
        """Write the summary line, and the failures again so the end of a log says it all."""
        if self._closed:
            return
        self._closed = True
        infos = self.downloads()
        elapsed = self._clock() - self._started_at if self._started_at is not None else 0.0
        completed = [i for i in infos if i.status is DownloadStatus.COMPLETED]
        failed = [i for i in infos if i.status is DownloadStatus.FAILED]
        cancelled = [i for i in infos if i.status is DownloadStatus.CANCELLED]
        transferred = sum(max(0, i.bytes_downloaded - i.resumed_from) for i in infos)
        counts = [f"{len(completed)} completed"]
        if failed:
            counts.append(f"{len(failed)} failed")
        if cancelled:
            counts.append(f"{len(cancelled)} cancelled (partial files kept for resume)")
        line = f"nbdl: {len(infos)} files: {', '.join(counts)}; "
        line += f"{format_bytes(transferred)} downloaded in {elapsed:.1f} s"
        self._write(line)
        for info in failed[:_MAX_FAILURE_LINES]:
            self._write(f"  failed: {info.filename}: {info.error or 'failed'}")
        if len(failed) > _MAX_FAILURE_LINES:
            self._write(f"  ... and {len(failed) - _MAX_FAILURE_LINES} more failed")


def _describe(info: DownloadInfo) -> str:
    if info.from_cache:
        return f"{format_bytes(info.bytes_downloaded)} (already present)"
    text = format_bytes(info.bytes_downloaded)
    elapsed = info.elapsed
    if elapsed is not None:
        text += f" in {elapsed:.1f} s"
        speed = info.get_speed_estimate()
        if speed:
            text += f" ({format_bytes(speed)}/s)"
    if info.resumed_from:
        text += f", resumed at {format_bytes(info.resumed_from)}"
    if info.attempts > 1:
        text += f", on attempt {info.attempts}"
    if info.served_by:
        text += f", from mirror {info.served_by}"
    if info.output is not None:
        text += f", extracted to {info.output.name}" if info.output.name else ""
    if info.location:
        text += f", stored at {info.location}"
    return text
