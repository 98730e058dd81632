"""Which tracker ``tracker=`` names: notebook widgets, a terminal display, log lines, or none.

The manager never imports ipywidgets or Rich; the tracker modules do, lazily, when chosen here.
"""

from __future__ import annotations

from ._errors import InvalidConfigError
from ._tracker import NullTracker, Tracker

TRACKER_NAMES = ("auto", "none", "notebook", "rich", "log")


def resolve_tracker(tracker: object) -> Tracker:
    """Turn ``tracker=`` into a tracker object: a name from ``TRACKER_NAMES`` or a tracker."""
    if isinstance(tracker, str):
        if tracker == "none":
            return NullTracker()
        if tracker == "auto":
            return notebook_tracker(force=False) or terminal_tracker(None)
        if tracker == "notebook":
            found = notebook_tracker(force=True)
            assert found is not None
            return found
        if tracker in ("rich", "log"):
            return terminal_tracker(tracker)
        raise InvalidConfigError(
            f"tracker must be one of {', '.join(map(repr, TRACKER_NAMES))} or a tracker "
            f"object, not {tracker!r}"
        )
    if isinstance(tracker, Tracker):
        return tracker
    raise InvalidConfigError(
        f"tracker {tracker!r} lacks register_download/patch_download/start/close"
    )


def notebook_tracker(*, force: bool) -> Tracker | None:
    """The notebook display inside a Jupyter kernel (always when ``force``), else None.

    Widget bars when ipywidgets imports, else a text display; never "IProgress not found".
    """
    if not force:
        import sys

        # Look only at modules already loaded: a script must not pay for importing IPython.
        ipython, zmqshell = sys.modules.get("IPython"), sys.modules.get("ipykernel.zmqshell")
        shell = ipython.get_ipython() if ipython is not None else None
        # A kernel's shell (Colab's subclasses it) talks to a front end that renders widgets;
        # terminal IPython does not.
        if zmqshell is None or not isinstance(shell, zmqshell.ZMQInteractiveShell):
            return None
    from ._notebook import make_notebook_tracker

    return make_notebook_tracker()


def terminal_tracker(kind: str | None) -> Tracker:
    """The display for scripts: ``"rich"`` live, ``"log"`` lines, None picks by the terminal."""
    import sys

    from ._rich import LogTracker, RichTracker

    if kind is None:
        stdout = sys.stdout
        # CI logs and pipes get plain lines: a live display there is a stream of escape codes.
        kind = "rich" if stdout is not None and stdout.isatty() else "log"
    return RichTracker() if kind == "rich" else LogTracker()
