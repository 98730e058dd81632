"""Processors: steps run on a file once it is downloaded and verified (the guide's plugins).

A processor is any object with a ``label`` (the phase the displays show, e.g. ``"extracting"``)
and a ``process(job)`` method.  It runs in a worker thread, off the event loop, so it overlaps
the other downloads of the batch; it gets a :class:`ProcessJob` (the file, its folder, its
``FileConfig``, a cancel flag and a progress callback) and returns the path of what it made, or
None.  Extraction (``extract=True``) is the built-in one, :class:`Extract`::

    class ToParquet:
        label = "converting"

        def process(self, job: nbdl.ProcessJob) -> Path | None:
            if job.path.suffix != ".csv":
                return None                      # not for this file
            out = job.path.with_suffix(".parquet")
            if not out.exists():                 # a re-run does no work
                pandas.read_csv(job.path).to_parquet(out)
            return out

    await nbdl.fetch(urls, dest="data", processors=[ToParquet()])

A processor must make its result atomically (write elsewhere, then rename) and detect that it is
already there, because it runs again on every run, also for files found complete.  An exception
makes the file FAILED with kind ``process`` (an ``ExtractionError``: kind ``extract``); the
downloaded file itself stays, complete and verified.  A cancel sets ``job.cancelled``: check it
in long loops, and leave nothing half-made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ._errors import ExtractionError
from ._models import ExtractLimits, FileConfig

__all__ = ["Extract", "ProcessJob", "Processor"]


@dataclass(frozen=True, slots=True)
class ProcessJob:
    """One verified file for a processor to work on."""

    #: The complete, verified file at its final path.
    path: Path
    #: The download folder: results belong inside it.
    dest: Path
    config: FileConfig
    #: Set when the batch is cancelled: stop soon, leave nothing half-made.
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: ``progress(done, total)`` in any unit (bytes for extraction); throttled by nbdl.
    progress: Callable[[int, int | None], None] = field(default=lambda done, total: None)


@runtime_checkable
class Processor(Protocol):
    """A step run in a thread on each verified file; see the module docstring."""

    #: The phase shown while it runs, e.g. ``"extracting"``.
    label: str

    def process(self, job: ProcessJob) -> Path | None:
        """Do the work (or find it done) and return what was made, or None."""
        ...


class Extract:
    """The built-in processor of ``extract=True``: unpacks archives safely, once.

    Archives are recognised by their first bytes (tar, tar.gz/bz2/xz/zst, zip, and single-file
    gz/bz2/xz/zst) and extracted into ``dest/<name without archive suffixes>`` (or the item's
    ``extract_to``) through a hidden temporary folder renamed into place when complete; a marker
    remembers which archive was extracted, so a re-run does no work.  ``limits`` bound the total
    size, the compression ratio and the number of members (decompression bombs).
    """

    label = "extracting"

    def __init__(self, limits: ExtractLimits | None = None) -> None:
        self.limits = limits or ExtractLimits()

    def process(self, job: ProcessJob) -> Path | None:
        """Extract ``job.path``, or find it extracted already; the folder (or file) made.

        A file that is no archive is an error when its ``FileConfig`` asks for extraction, and
        is left alone when only the batch does (``fetch(..., extract=True)``).
        """
        # Loaded on first use: the archive modules cost ~25 ms of every start-up otherwise.
        from . import _extract

        target = job.config.extract_to or _extract.default_target(job.path.name)
        done = _extract.extracted(job.path, job.dest, target)
        if done is not None:
            return done
        if _extract.archive_format(job.path) is None:
            if job.config.extract is None and job.config.extract_to is None:
                return None  # fetch(extract=True) extracts the archives of a batch, if any
            raise ExtractionError(
                f"{job.path.name} is not an archive nbdl can extract (tar, zip, or a file "
                "compressed with gzip, bzip2, xz or zstd)"
            )
        try:
            return _extract.extract(
                job.path,
                job.dest,
                target,
                limits=self.limits,
                cancel=job.cancelled,
                progress=job.progress,
            )
        except _extract.ExtractCancelled:
            return None

    def __repr__(self) -> str:
        return f"Extract({self.limits!r})"
