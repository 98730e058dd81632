"""Which tracker ``tracker="auto"`` means here: notebook widgets, a terminal display, or log lines.

The manager never imports ipywidgets or Rich; the tracker modules do, lazily, when chosen here.
"""

from __future__ import annotations

from ._errors import InvalidConfigError
from ._tracker import NullTracker, Tracker


def resolve_tracker(tracker: object) -> Tracker:
    """Turn ``tracker=`` into a tracker object: "auto", "none", or anything with the protocol."""
    if isinstance(tracker, str):
        if tracker == "none":
            return NullTracker()
        if tracker == "auto":
            return notebook_tracker() or terminal_tracker()
        raise InvalidConfigError(
            f"tracker must be 'auto', 'none' or a tracker object, not {tracker!r}"
        )
    if isinstance(tracker, Tracker):
        return tracker
    raise InvalidConfigError(
        f"tracker {tracker!r} lacks register_download/patch_download/start/close"
    )


def notebook_tracker() -> Tracker | None:
    """The notebook display when running in a Jupyter kernel, else None."""
    return None


def terminal_tracker() -> Tracker:
    """The display for scripts: live in a terminal, log lines otherwise."""
    return NullTracker()
