"""The notebook display: tqdm.notebook bars, an overall bar, a status table and a Cancel button.

Jupyter rules this module is built around (see ``KNOWLEDGE.md``, "Jupyter facts"):

* the display is shown once, synchronously, from the cell that started the batch; afterwards only
  widget properties change, because ``display()`` from a background task can land in the wrong
  cell;
* ``patch_download`` runs per chunk, so it only records; one refresh timer per tracker (an asyncio
  task on the running loop, 2-4 Hz) redraws only what changed, inside ``hold_sync`` and under a
  message budget, far below the 1000 msgs/s at which Jupyter starts dropping iopub messages;
* ipywidgets and ``tqdm.notebook`` are imported only when a tracker is built, never on
  ``import nbdl``; without ipywidgets a text display takes over (no "IProgress not found").
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import html
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any

from sortedcontainers import SortedList

from ._models import DownloadInfo, DownloadStatus, format_bytes
from ._tracker import DownloadTracker

__all__ = ["NotebookTracker", "TextNotebookTracker", "make_notebook_tracker", "widgets_available"]

logger = logging.getLogger("nbdl")

_ACTIVE = frozenset({DownloadStatus.PENDING, DownloadStatus.IN_PROGRESS, DownloadStatus.PROCESSING})
_FAILED = DownloadStatus.FAILED  # a global: an enum's class attribute costs ~80 ns per read
_BAR_STYLE = {
    DownloadStatus.COMPLETED: "success",
    DownloadStatus.FAILED: "danger",
    DownloadStatus.CANCELLED: "warning",
}
_ROW_COLOUR = {DownloadStatus.FAILED: "#fde2e1", DownloadStatus.CANCELLED: "#fff4ce"}


def widgets_available() -> bool:
    """True when ipywidgets imports, so that ``tqdm.notebook`` can draw its bars."""
    try:
        import ipywidgets  # noqa: F401  # the import is the test
    except ImportError:
        return False
    return True


def make_notebook_tracker() -> CellTracker:
    """A :class:`NotebookTracker`, or the text display when ipywidgets is missing."""
    return NotebookTracker() if widgets_available() else TextNotebookTracker()


def _ipython_display(obj: object, **kwargs: Any) -> Any:
    from IPython.display import display

    show: Callable[..., Any] = display  # IPython's display() has no annotations
    return show(obj, **kwargs)


def _status_text(info: DownloadInfo) -> str:
    if info.status is DownloadStatus.PROCESSING and info.note:
        return info.note  # "extracting 40 %": the phase says more than "processing"
    text = "cached" if info.from_cache else info.status.value.replace("_", " ")
    if info.status is DownloadStatus.COMPLETED:
        if info.served_by:
            text += " (from a mirror)"
        if info.output is not None:
            text += f" → {info.output.name}"
        if info.location:
            text += f" → {info.location}"
        return text
    return f"{text} ({info.note})" if info.note and not info.is_terminal() else text


def _bar_note(info: DownloadInfo) -> str:
    if info.status is DownloadStatus.FAILED and info.error:
        # A long message would squeeze the bar out of its row; the table has it whole.
        error = info.error if len(info.error) <= 32 else info.error[:31] + "…"
        return f"failed: {error}"
    return _status_text(info)


def _speed_text(info: DownloadInfo) -> str:
    speed = info.get_speed_estimate()
    return f"{format_bytes(speed)}/s" if speed and not info.from_cache else ""


def _size_text(info: DownloadInfo) -> str:
    if info.total_bytes is None or info.bytes_downloaded == info.total_bytes:
        return format_bytes(info.bytes_downloaded) if info.bytes_downloaded else "?"
    return f"{format_bytes(info.bytes_downloaded)} / {format_bytes(info.total_bytes)}"


_TABLE_STYLE = (
    "<style>.nbdl-table{border-collapse:collapse;font-size:90%}"
    ".nbdl-table th,.nbdl-table td{padding:1px 10px;text-align:left;white-space:nowrap}"
    ".nbdl-table thead{border-bottom:1px solid #ccc}</style>"
)


def table_html(rows: list[DownloadInfo], hidden: int = 0) -> str:
    """An HTML table of ``rows``: file, size, status, speed, error; failures in red."""
    cells = []
    for info in rows:
        colour = _ROW_COLOUR.get(info.status)
        style = f' style="background:{colour}"' if colour else ""
        cells.append(
            f"<tr{style}><td>{html.escape(info.filename)}</td><td>{_size_text(info)}</td>"
            f"<td>{html.escape(_status_text(info))}</td><td>{_speed_text(info)}</td>"
            f"<td>{html.escape(info.error or '')}</td></tr>"
        )
    more = (
        f'<tr><td colspan="5"><i>... {hidden} more (press "Show all")</i></td></tr>'
        if hidden
        else ""
    )
    return (
        f"{_TABLE_STYLE}"
        '<table class="nbdl-table"><thead><tr><th>file</th><th>size</th><th>status</th>'
        f"<th>speed</th><th>error</th></tr></thead><tbody>{''.join(cells)}{more}</tbody></table>"
    )


class MessageBudget:
    """A leaky bucket of widget messages shared by every notebook display of the process.

    Each refresh reports what it sent; the refresh timers then wait until the bucket has
    drained to the rate, so all displays together stay under ``rate`` messages per second on
    average, bursts (new bars, a final redraw) included.  Jupyter drops iopub messages above
    1000/s; the default stays an order of magnitude below.
    """

    def __init__(self, rate: float = 50.0) -> None:
        self.rate = rate
        self._free_at = 0.0

    def spend(self, messages: int) -> float:
        """Record ``messages`` just sent; returns the seconds to wait before sending more."""
        now = time.monotonic()
        self._free_at = max(self._free_at, now) + messages / self.rate
        return self._free_at - now


class CellTracker(DownloadTracker):
    """What the notebook displays share: a throttled refresh timer, display-once and cancel.

    Subclasses implement :meth:`_show_object` (display, once) and :meth:`refresh` (redraw what
    changed, return the messages sent).
    """

    def __init__(self, *, refresh_interval: float) -> None:
        super().__init__()
        if not refresh_interval > 0:
            raise ValueError(f"refresh_interval must be > 0 seconds, got {refresh_interval!r}")
        self.refresh_interval = refresh_interval
        # The store marks the URLs changed since the last refresh (``_changed``): what the next
        # refresh redraws.  A dict, not a set: the first refresh meets rows in registration order.
        self._changed = {}
        self._shown = False
        self._closed = False
        self._timer: asyncio.Task[None] | None = None
        self._cancel_callback: Callable[[], object] | None = None
        self._cancel_requested = False
        #: False hides the Cancel button: a blocked kernel thread could not handle its click.
        self.cancellable = True

    def start(self) -> None:
        """Show the display (unless already shown) and start the refresh timer.

        Called from the task that runs the batch: unless :meth:`on_cancel` set another action,
        the Cancel button cancels that task.
        """
        self._closed = False
        self.show()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven by hand (tests): refresh() is called explicitly
            return
        if self._cancel_callback is None:
            task = asyncio.current_task()
            if task is not None:
                self._cancel_callback = _task_canceller(loop, task)
        if self._timer is None or self._timer.done():
            # Its first refresh runs as soon as the batch task yields.
            self._timer = loop.create_task(self._run_timer(), name="nbdl-notebook-refresh")

    def close(self) -> None:
        """Stop the timer and draw the final state (also after a cancel)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = True
        self._final_refresh()

    # -- display -----------------------------------------------------------------------------
    def show(self) -> None:
        """Display the tracker in the current cell, once; later calls do nothing.

        Call it from the cell's own code (not from a background task) so the output lands in
        that cell; ``nbdl.start`` and ``nbdl.fetch_sync`` do.
        """
        if self._shown:
            return
        self._shown = True
        self._show_object()

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when the Cancel button is pressed (instead of cancelling the task)."""
        self._cancel_callback = callback

    def cancel(self) -> None:
        """What the Cancel button does: ask the batch to stop."""
        if self._cancel_requested or self._closed:
            return
        self._cancel_requested = True
        if self._cancel_callback is not None:
            self._cancel_callback()

    # -- refreshing --------------------------------------------------------------------------
    async def _run_timer(self) -> None:
        while True:
            try:
                sent = self.refresh()
            except Exception:  # a drawing bug must not kill the downloads
                logger.exception("nbdl: the notebook display failed; it stops updating")
                return
            # The budget also covers bursts (many bars at once) and the other displays.
            wait = self.budget.spend(sent)
            await asyncio.sleep(max(self.refresh_interval, wait))

    #: One budget for every notebook display of the process (several jobs may run at once).
    budget: MessageBudget

    def _final_refresh(self) -> None:
        self.budget.spend(self.refresh())

    def refresh(self) -> int:
        """Redraw what changed since the last refresh; returns the widgets (messages) touched."""
        raise NotImplementedError

    def _show_object(self) -> None:
        raise NotImplementedError

    def _changed_infos(self) -> list[DownloadInfo]:
        downloads = self._downloads
        return [downloads[url] for url in self._take_changed()]


CellTracker.budget = MessageBudget()


def _task_canceller(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> Callable[[], None]:
    # The button is clicked on the kernel's thread; the task may run on a private loop.
    def cancel() -> None:
        loop.call_soon_threadsafe(task.cancel)

    return cancel


class _Totals:
    """Batch-wide counts kept up to date from the changed rows only (O(changes) per refresh)."""

    def __init__(self) -> None:
        self.status: Counter[DownloadStatus] = Counter()
        self.cached = 0
        self.bytes_done = 0
        self.bytes_total = 0
        self.last: dict[str, DownloadInfo] = {}
        #: Each URL's rank in registration order, and the URL of each rank: tables list their
        #: rows in this order, and sorting a few ranks is cheaper than ranking every file.
        self.rank: dict[str, int] = {}
        self.urls: list[str] = []
        #: The ranks of failed and of active files, for the tables' first rows: either group can
        #: hold most of 100,000 files, and the first k of a sorted list cost O(k) to read.
        self.failed_ranks: SortedList[int] = SortedList()
        self.active_ranks: SortedList[int] = SortedList()

    def update(self, info: DownloadInfo) -> DownloadInfo | None:
        old = self.last.get(info.url)
        status = info.status
        if old is None:
            was = None
            rank = self.rank[info.url] = len(self.urls)
            self.urls.append(info.url)
        else:
            was = old.status
            rank = self.rank[info.url]
            self._add(old, -1)
        self._add(info, 1)
        self.last[info.url] = info
        if status is not was:
            # Files also leave FAILED: registered again they are queued, retried active.
            if status is _FAILED:
                self.failed_ranks.add(rank)
            elif was is _FAILED:
                self.failed_ranks.discard(rank)
            if status in _ACTIVE:
                if was not in _ACTIVE:
                    self.active_ranks.add(rank)
            elif was in _ACTIVE:
                self.active_ranks.discard(rank)
        return old

    def info(self, rank: int) -> DownloadInfo:
        return self.last[self.urls[rank]]

    def _add(self, info: DownloadInfo, sign: int) -> None:
        self.status[info.status] += sign
        self.cached += sign * info.from_cache
        self.bytes_done += sign * info.bytes_downloaded
        self.bytes_total += sign * max(info.total_bytes or 0, info.bytes_downloaded)

    @property
    def files(self) -> int:
        return len(self.last)

    def summary(self) -> str:
        parts = [f"{self.status[DownloadStatus.COMPLETED]}/{self.files} files completed"]
        active = sum(self.status[status] for status in _ACTIVE)
        if active:
            parts.append(f"{active} active")
        if self.cached:
            parts.append(f"{self.cached} cached")
        for status in (DownloadStatus.FAILED, DownloadStatus.CANCELLED):
            if self.status[status]:
                parts.append(f"{self.status[status]} {status.value}")
        return " · ".join(parts)


class NotebookTracker(CellTracker):
    """Live notebook display: one ``tqdm.notebook`` bar per file, an overall bar, a table.

    ``tracker="auto"`` picks it inside a Jupyter kernel; pass an instance as ``tracker=`` to tune
    it.  A batch of at most ``max_bars`` files gets a bar per file from the start.  In a larger
    batch a file gets a bar once it has been active (pending or in progress) for ``bar_delay``
    seconds, or when it fails: bars of files that last a few milliseconds would churn faster
    than anyone can read (the overall bar and the table show them).  A finished file keeps its
    bar until an active file or a newer failure needs the slot; ``bar_delay=0`` gives bars to
    every file as soon as a refresh sees it, finished ones included.  The table lists
    ``max_table_rows`` rows (failures, active, newest) until "Show all" is pressed.  Widgets are
    reachable for tests and custom layouts: ``widget`` (the whole VBox), ``bars`` (URL to bar),
    ``overall``, ``table``, ``cancel_button``.  ``clock`` can be injected for tests.
    """

    def __init__(
        self,
        *,
        refresh_interval: float = 0.3,
        max_bars: int = 8,
        max_table_rows: int = 50,
        bar_delay: float = 0.5,
        title: str = "nbdl",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(refresh_interval=refresh_interval)
        if max_bars < 1 or max_table_rows < 1:
            raise ValueError("max_bars and max_table_rows must be >= 1")
        if not bar_delay >= 0:
            raise ValueError(f"bar_delay must be >= 0 seconds, got {bar_delay!r}")
        self.max_bars = max_bars
        self.bar_delay = bar_delay
        self._clock = clock
        self.max_table_rows = max_table_rows
        import ipywidgets as widgets

        self._bar_class = _bar_class()
        self._totals = _Totals()
        #: URL to its bar, in display order; only files that currently have a bar.
        self.bars: dict[str, Any] = {}
        # Finished files, newest last: the table's newest rows (and, with bar_delay=0, bar
        # candidates). Failures have their own history so that a run of successes does not push
        # them out; they are always candidates for the bars left after the active files.
        self._recent: deque[str] = deque(maxlen=max(max_bars, max_table_rows))
        self._failures: deque[str] = deque(maxlen=max(max_bars, max_table_rows))
        #: Pending and in-progress files, in the order they became active, and since when: the
        #: download's ``started_at`` (the clock is wall time like it), else when a refresh first
        #: saw it active; never earlier than the entry before it, so the times never decrease
        #: along the dict.  Refreshes can be far apart (the message budget), so first-seen alone
        #: made a file of one second look active for less than half of it.
        self._active_since: dict[str, float] = {}
        self._latest_since = float("-inf")
        #: Finished files that have a bar, oldest first: the finished files that may keep a bar
        #: (unless ``bar_delay`` is 0, no other finished file gets one).
        self._finished_bars: dict[str, None] = {}
        self._all_bars = False  # decided when shown: small batches get a bar per file
        self._laid_out_at = -1  # the store's version when the bars were last laid out
        self._label_width = "10em"
        self.overall = self._bar_class(total=0, desc="total", **_BAR_OPTIONS)
        self.header = widgets.HTML(value=f"<b>{html.escape(title)}</b>")
        self.files_box = widgets.VBox()
        self.table = widgets.HTML()
        self.show_all_button = widgets.ToggleButton(
            value=False, description="Show all", layout=widgets.Layout(display="none")
        )
        self.show_all_button.observe(self._on_show_all, names="value")
        self.cancel_button = widgets.Button(
            description="Cancel", button_style="warning", icon="stop", tooltip="Cancel the batch"
        )
        self.cancel_button.on_click(lambda _button: self.cancel())
        # Widget-opening messages not yet charged to the budget: the skeleton's models so far
        # (boxes, texts, buttons, the overall bar, their layouts and styles).
        self._created = 32
        self.widget = widgets.VBox(
            [
                self.header,
                self.overall.container,
                self.files_box,
                self.table,
                widgets.HBox([self.cancel_button, self.show_all_button]),
            ]
        )

    def _show_object(self) -> None:
        self._layout_bars()
        if not self.cancellable:
            self.cancel_button.layout.display = "none"
        _ipython_display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def start(self) -> None:
        """Create the bars, show the display and start the refresh timer."""
        self._layout_bars()
        super().start()

    def _layout_bars(self) -> None:
        """A bar per file for small batches, made as early as possible.

        ``nbdl.start`` shows the display from the calling cell with the batch already
        registered, so that the widgets are created there rather than in the background task.
        """
        # start() lays out and then shows, and showing lays out: the second call would only scan
        # every file's name again.
        if self.version == self._laid_out_at:
            return
        self._laid_out_at = self.version
        self._all_bars = len(self._downloads) <= self.max_bars
        # One label width for every bar (the longest name, within limits) lines the bars up.
        longest = max((len(info.filename) for info in self.downloads()), default=8)
        self._label_width = f"{max(8, min(longest, _MAX_LABEL)) * 0.6 + 1:.1f}em"
        _fit(self.overall, self._label_width)
        if not self._all_bars:
            return
        for info in self.downloads():
            self._ensure_bar(info)
        children = tuple(bar.container for bar in self.bars.values())
        if children != self.files_box.children:
            self.files_box.children = children

    def cancel(self) -> None:
        """Stop the batch, as the Cancel button does."""
        if not self._closed and not self._cancel_requested:
            with self.cancel_button.hold_sync():
                self.cancel_button.disabled = True
                self.cancel_button.description = "Cancelling..."
        super().cancel()

    def _on_show_all(self, _change: object) -> None:
        self._render_table(force=True)

    # -- refresh -----------------------------------------------------------------------------
    def refresh(self) -> int:
        """Redraw what changed since the last refresh; returns the widget messages it sent.

        It also redraws, without a change, when an active file's bar has become due.  Every shown
        widget is held for the whole redraw, so each sends at most one message
        however many of its properties changed.
        """
        if not self._changed and not self._closed_pending() and not self._bar_due():
            return 0
        held = self._live_widgets()
        with _held(*held):
            self._redraw()
            # ipywidgets sends a held widget's pending changes as one message on release.
            sent = sum(1 for widget in held if getattr(widget, "_states_to_send", True))
        # Widgets opened since the last refresh (at start, or for new bars) count too.
        created, self._created = self._created, 0
        return sent + created

    def _live_widgets(self) -> list[Any]:
        widgets = [self.files_box, self.table, self.cancel_button, self.show_all_button]
        for bar in (self.overall, *self.bars.values()):
            ltext, pbar, rtext = bar.container.children
            widgets += (ltext, pbar, rtext, pbar.layout)
        return widgets

    def _redraw(self) -> None:
        changed = self._changed_infos()
        now = self._clock()
        since = self._active_since
        previous: dict[str, DownloadInfo | None] = {}
        for info in changed:
            url = info.url
            old = previous[url] = self._totals.update(info)
            if info.status in _ACTIVE:
                if url not in since:
                    started = info.started_at if info.started_at is not None else now
                    self._latest_since = max(self._latest_since, min(started, now))
                    since[url] = self._latest_since
            else:
                since.pop(url, None)
                if info.is_terminal() and (old is None or not old.is_terminal()):
                    if info.status is _FAILED:
                        self._failures.append(url)
                    else:
                        self._recent.append(url)
                        if url in self.bars:
                            self._finished_bars.pop(url, None)  # finished again: newest now
                            self._finished_bars[url] = None
        if not self._all_bars:
            self._choose_bars(now)
        for info in changed:
            bar = self.bars.get(info.url)
            if bar is not None:
                self._render_bar(bar, info, previous.get(info.url))
        self._render_overall()
        self._render_table()
        if self._closed:
            self._finish()

    def _closed_pending(self) -> bool:
        return self._closed and not self.overall.disable

    def _due_active(self, now: float) -> list[str]:
        """The first ``max_bars`` files active for ``bar_delay`` seconds or more."""
        due = []
        # islice: nothing bounds how many files are active (pending) at once.
        for url, since in itertools.islice(self._active_since.items(), self.max_bars):
            if now - since < self.bar_delay:
                break  # the files after it became active later still
            due.append(url)
        return due

    def _bar_due(self) -> bool:
        """True when an active file without a bar has waited ``bar_delay``: a refresh is due."""
        if self._all_bars or self._closed:
            return False
        now = self._clock()
        for url, since in itertools.islice(self._active_since.items(), self.max_bars):
            if url not in self.bars:
                return now - since >= self.bar_delay
        return False

    def _choose_bars(self, now: float) -> None:
        """Keep bars for the active files, then the newest failures, then the newest others.

        Active files count once active for ``bar_delay``; of the finished files, only those
        that already have a bar (or, with ``bar_delay=0``, any newest one) compete for the rest.
        """
        finished = self._recent if self.bar_delay == 0 else self._finished_bars
        candidates = itertools.chain(
            self._due_active(now), reversed(self._failures), reversed(finished)
        )
        # Once each: a retried failure may be active too, a file registered again finish twice.
        wanted = list(itertools.islice(dict.fromkeys(candidates), self.max_bars))
        keep = set(wanted)
        if keep == set(self.bars):
            return
        # Retired bars lend their widgets to the new ones: creating widgets costs ~10 messages
        # per bar (and closing them more), redrawing an existing one costs 3.
        spare = [self.bars.pop(url) for url in list(self.bars) if url not in keep]
        for url in [url for url in self._finished_bars if url not in keep]:
            del self._finished_bars[url]
        for bar in spare:
            bar.disp = _no_draw  # its widgets now belong to another bar
            bar.close()
        for url in [u for u in wanted if u not in self.bars]:
            recycled = spare.pop().container if spare else None
            bar = self._ensure_bar(self._totals.last[url], recycled)
            # A bar created late has not seen this download's earlier changes: draw it now.
            self._render_bar(bar, self._totals.last[url], None)
        for bar in spare:
            for widget in (*bar.container.children, bar.container):
                widget.close()
        self.files_box.children = tuple(bar.container for bar in self.bars.values())

    def _ensure_bar(self, info: DownloadInfo, recycled: Any = None) -> Any:
        bar = self.bars.get(info.url)
        if bar is None:
            name = info.filename
            if len(name) > _MAX_LABEL:
                name = name[: _MAX_LABEL - 3] + "..."
            if recycled is None:
                # Opening a bar's 11 widget models (bar, texts, layouts, styles): messages too.
                self._created += 11
            with contextlib.ExitStack() as hold:
                # tqdm draws while it builds the bar: hold the widgets so that draw is one
                # message per widget, sent when the bar is complete.
                self._bar_class.recycle, self._bar_class.hold = recycled, hold
                try:
                    bar = self._bar_class(total=info.total_bytes, desc=name, **_BAR_OPTIONS)
                finally:
                    self._bar_class.recycle = self._bar_class.hold = None
                bar.set_postfix_str(_status_text(info), refresh=True)
            _fit(bar, self._label_width)
            self.bars[info.url] = bar
        return bar

    def _render_bar(self, bar: Any, info: DownloadInfo, prev: DownloadInfo | None) -> None:
        if bar.disable:  # closed: a terminal state is final
            return
        ltext, pbar, rtext = bar.container.children
        with _held(ltext, pbar, rtext):
            if info.status is DownloadStatus.IN_PROGRESS and (
                prev is None
                or prev.status is not DownloadStatus.IN_PROGRESS
                or info.bytes_downloaded < bar.n
            ):
                # A transfer (re)starts: rates count from here, resumed bytes are not speed.
                bar.reset(total=info.total_bytes)
                bar.n = bar.last_print_n = bar.initial = info.bytes_downloaded
            if info.total_bytes is not None and bar.total != info.total_bytes:
                bar.total = info.total_bytes
                pbar.max = info.total_bytes
                pbar.bar_style = ""
                pbar.layout.width = None
            bar.set_postfix_str(_bar_note(info), refresh=False)
            if info.is_terminal() and prev is None and info.elapsed is not None:
                # A bar made after its file ended saw no transfer: time it from the record,
                # so its speed is the file's average rather than bytes over microseconds.
                bar.start_t = bar.last_print_t = bar._time() - info.elapsed
                bar.initial = info.resumed_from
            if info.is_terminal():
                self._close_bar(bar, pbar, info)
            elif info.bytes_downloaded > bar.n:
                bar.update(info.bytes_downloaded - bar.n)
            else:
                bar.refresh()

    @staticmethod
    def _close_bar(bar: Any, pbar: Any, info: DownloadInfo) -> None:
        if info.status is DownloadStatus.COMPLETED:
            size = info.total_bytes if info.total_bytes is not None else info.bytes_downloaded
            bar.total = size
            pbar.max = max(size, 1)
            pbar.layout.width = None
            bar.n = size
        else:
            bar.n = info.bytes_downloaded
        # tqdm's close() picks success or danger from n < total; the status decides here.
        bar.close()
        if info.status is DownloadStatus.COMPLETED or not bar.total:
            # Complete, or ended before its size was known: a full bar in the status colour.
            pbar.value = pbar.max
        pbar.layout.width = None
        pbar.bar_style = _BAR_STYLE[info.status]

    def _render_overall(self) -> None:
        totals, bar = self._totals, self.overall
        if bar.disable:
            return
        ltext, pbar, rtext = bar.container.children
        with _held(ltext, pbar, rtext):
            if bar.total != totals.bytes_total:
                bar.total = totals.bytes_total
                pbar.max = max(totals.bytes_total, 1)
                # Built with total 0, tqdm drew a 20px "unknown size" stub: widen it.
                pbar.layout.width = None
                pbar.bar_style = ""
            bar.set_postfix_str(totals.summary(), refresh=False)
            if totals.bytes_done > bar.n:
                bar.update(totals.bytes_done - bar.n)
            else:
                bar.n = totals.bytes_done
                bar.refresh()

    def _render_table(self, *, force: bool = False) -> None:
        files = self._totals.files
        if files > self.max_table_rows and not self.show_all_button.value:
            rows = self._table_rows()
            hidden = files - len(rows)
        else:
            # Every row: O(files) per refresh, but only while the reader asks for all of them.
            rows, hidden = list(self._totals.last.values()), 0
        if files > self.max_table_rows:
            self.show_all_button.layout.display = None
        text = table_html(rows, hidden)
        if text == self.table.value and not force:
            return
        self.table.value = text

    def _table_rows(self) -> list[DownloadInfo]:
        """Failures, then active files, then the newest finished, up to ``max_table_rows``.

        Failures fill at most half the rows; the failures and active files shown are the first
        registered, and the rows keep registration order.  Each group comes from an index kept
        by ``_Totals.update``, so this costs O(rows shown) however many files the batch has.
        """
        totals, limit = self._totals, self.max_table_rows
        picked = list(totals.failed_ranks.islice(0, limit // 2))
        picked += totals.active_ranks.islice(0, limit - len(picked))
        chosen = set(picked)
        for url in reversed(self._recent):
            if len(picked) >= limit:
                break
            rank = totals.rank[url]
            if rank not in chosen:  # a file that finished twice (re-registered) is one row
                chosen.add(rank)
                picked.append(rank)
        return [totals.info(rank) for rank in sorted(picked)]

    def _finish(self) -> None:
        totals, bar = self._totals, self.overall
        ltext, pbar, rtext = bar.container.children
        with _held(ltext, pbar, rtext, self.cancel_button):
            bar.close()
            if totals.status[DownloadStatus.FAILED]:
                pbar.bar_style = "danger"
            elif totals.status[DownloadStatus.CANCELLED]:
                pbar.bar_style = "warning"
            else:
                pbar.value = pbar.max
                pbar.bar_style = "success"
            cancelled = bool(totals.status[DownloadStatus.CANCELLED])
            self.cancel_button.disabled = True
            self.cancel_button.button_style = ""
            self.cancel_button.icon = "ban" if cancelled else "check"
            self.cancel_button.description = "Cancelled" if cancelled else "Done"


@contextlib.contextmanager
def _held(*widgets: Any) -> Iterator[None]:
    """``hold_sync`` on several widgets: each sends one message with all its changes."""
    with contextlib.ExitStack() as stack:
        for widget in widgets:
            stack.enter_context(widget.hold_sync())
        yield


def _fit(bar: Any, label_width: str) -> None:
    """Line the bar up with the others, and never let its texts squeeze it out of the row."""
    ltext, pbar, _ = bar.container.children
    ltext.layout.width = label_width
    pbar.layout.min_width = "10em"


_BAR_CLASS: Any = None
_MAX_LABEL = 40  # characters of a file name shown left of its bar
_BAR_OPTIONS: dict[str, Any] = {
    "unit": "B",
    "unit_scale": True,
    "unit_divisor": 1024,
    "display": False,  # the tracker places the bar in its own box, displayed once
    "mininterval": 0,  # the tracker's timer is the throttle; the bar draws when told
    "miniters": 1,
    "leave": True,
    # The name alone on the left never changes, so a redraw costs 2 messages, not 3.
    "bar_format": "{desc}{bar}{percentage:3.0f}% {n_fmt}/{total_fmt} "
    "[{elapsed}<{remaining}, {rate_fmt}{postfix}]",
}


def _no_draw(*_args: Any, **_kwargs: Any) -> None:
    """A retired bar's drawing function."""


def _bar_class() -> Any:
    """``tqdm.notebook.tqdm`` without tqdm's monitor thread (our timer is the only redraw)."""
    global _BAR_CLASS
    if _BAR_CLASS is None:
        from tqdm.notebook import tqdm as notebook_tqdm

        class _Bar(notebook_tqdm):  # type: ignore[misc]  # tqdm is untyped
            # tqdm's monitor thread would redraw bars from another thread, outside the budget.
            monitor_interval = 0
            #: Widgets of a retired bar for the next bar to draw in, instead of new widgets.
            recycle: Any = None
            #: Where to hold the new bar's widgets until it is built (see ``_ensure_bar``).
            hold: contextlib.ExitStack | None = None

            @staticmethod
            def status_printer(
                fp: Any, total: float | None = None, desc: str | None = None, ncols: Any = None
            ) -> Any:
                container = _Bar.recycle
                if container is None:
                    container = notebook_tqdm.status_printer(fp, total, desc, ncols)
                ltext, pbar, rtext = container.children
                if _Bar.hold is not None:
                    for widget in (ltext, pbar, rtext, pbar.layout):
                        _Bar.hold.enter_context(widget.hold_sync())
                if _Bar.recycle is not None:
                    # What tqdm's own status_printer sets up, on the existing widgets.
                    pbar.value = 0
                    pbar.max = total or 1
                    pbar.value = 0 if total else 1
                    pbar.bar_style = "" if total else "info"
                    pbar.layout.width = None if total else "20px"
                    ltext.value = desc or ""
                    rtext.value = ""
                return container

        _BAR_CLASS = _Bar
    return _BAR_CLASS


class TextNotebookTracker(CellTracker):
    """The notebook display without ipywidgets: a text summary updated in place about once a second.

    It uses ``display(..., display_id=True)`` and ``update()``, which reach the right output
    from any task, and never creates a widget (so no "IProgress not found").
    """

    def __init__(self, *, refresh_interval: float = 1.0, max_lines: int = 20) -> None:
        super().__init__(refresh_interval=refresh_interval)
        self.max_lines = max_lines
        self._totals = _Totals()
        self._handle: Any = None
        self.text = ""

    def _show_object(self) -> None:
        self._handle = _ipython_display(_Text(self.render()), display_id=True)

    def render(self) -> str:
        """The current text: a summary line and one line per active or failed file."""
        totals, limit = self._totals, max(self.max_lines, 0)
        lines = [f"nbdl: {totals.summary()}, {format_bytes(totals.bytes_done)}"]
        # The first active or failed files in registration order, without a scan of every file.
        first = heapq.merge(
            totals.active_ranks.islice(0, limit), totals.failed_ranks.islice(0, limit)
        )
        for rank in itertools.islice(first, limit):
            info = totals.info(rank)
            detail = f": {info.error}" if info.error else ""
            lines.append(f"  {_status_text(info):<12} {info.filename} {_size_text(info)}{detail}")
        shown = len(totals.active_ranks) + len(totals.failed_ranks)
        if shown > limit:
            lines.append(f"  ... and {shown - limit} more")
        return "\n".join(lines)

    def refresh(self) -> int:
        """Update the text if anything changed; returns 1 when a message was sent."""
        for info in self._changed_infos():
            self._totals.update(info)
        text = self.render()
        if text == self.text:
            return 0
        self.text = text
        if self._handle is not None:
            self._handle.update(_Text(text))
        return 1


class _Text:
    """Plain text that front ends show as preformatted."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.text)}</pre>"
