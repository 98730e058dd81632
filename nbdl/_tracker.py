"""The tracker interface, the state store trackers build on, and the tracker that shows nothing."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._models import DownloadInfo, DownloadStatus, PatchDownloadInfo


@runtime_checkable
class Tracker(Protocol):
    """What the manager tells a display about a batch.

    ``start`` is called once, synchronously, from the task that called ``fetch`` (so a notebook
    tracker displays itself in the calling cell) after every download is registered.
    ``patch_download`` is called often (per chunk): it must only record, never redraw; displays
    refresh on their own throttled timer.  ``close`` is called once, also after a cancel.
    """

    def register_download(self, info: DownloadInfo) -> None:
        """Record a new download, before it starts."""

    def patch_download(self, url: str, patch: PatchDownloadInfo) -> None:
        """Apply a partial update to the download of ``url``."""

    def start(self) -> None:
        """Show the display; every download of the batch is registered by now."""

    def close(self) -> None:
        """Final refresh and release; the batch has ended (or was cancelled)."""


class DownloadTracker:
    """The state store: the latest ``DownloadInfo`` of every download, by URL.

    Concrete trackers subclass it and read :meth:`downloads` from their refresh timer.  Updates
    are O(1); it needs no lock because everything runs on one event loop.  The manager uses a
    DownloadTracker given as ``tracker=`` as its own store (the results come from it), so a
    subclass that overrides ``register_download`` or ``patch_download`` must call ``super()``.
    """

    def __init__(self) -> None:
        self._downloads: dict[str, DownloadInfo] = {}
        #: Bumped on every change, so a display can skip refreshes when nothing moved.
        self.version = 0
        #: URLs registered or patched since a display last took them (``_take_changed``), in
        #: the order they first changed; None keeps no such list.  A display sets it to ``{}``:
        #: marked here rather than in an override, a report (one per chunk) costs one Python
        #: call less, which was a fifth of what a display added to a batch of small files.
        self._changed: dict[str, None] | None = None

    def register_download(self, info: DownloadInfo) -> None:
        """Record a new download (or replace the record of the same URL)."""
        self._downloads[info.url] = info
        self.version += 1
        if self._changed is not None:
            self._changed[info.url] = None

    def patch_download(self, url: str, patch: PatchDownloadInfo) -> None:
        """Apply ``patch`` to the download of ``url``; unknown URLs are a KeyError."""
        self._downloads[url] = self._downloads[url].apply(patch)
        self.version += 1
        if self._changed is not None:
            self._changed[url] = None

    def _take_changed(self) -> dict[str, None]:
        """The URLs changed since the last call (see ``_changed``), and a fresh list."""
        changed = self._changed
        if changed is None:
            return {}
        self._changed = {}
        return changed

    def get(self, url: str) -> DownloadInfo:
        """The latest record of ``url``."""
        return self._downloads[url]

    def downloads(self) -> list[DownloadInfo]:
        """Every record, in registration order."""
        return list(self._downloads.values())

    def count(self, status: DownloadStatus) -> int:
        """How many downloads are in ``status``."""
        return sum(1 for info in self._downloads.values() if info.status is status)

    def start(self) -> None:
        """Nothing to show: the store only records."""

    def close(self) -> None:
        """Nothing to release."""


class NullTracker:
    """A tracker that ignores everything: no display, no cost."""

    def register_download(self, info: DownloadInfo) -> None:
        """Ignore."""

    def patch_download(self, url: str, patch: PatchDownloadInfo) -> None:
        """Ignore."""

    def start(self) -> None:
        """Ignore."""

    def close(self) -> None:
        """Ignore."""
