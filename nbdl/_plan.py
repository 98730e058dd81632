"""The engine's plan: settings checked once, and the one builder of the engine that runs them.

``check_settings`` turns raw settings into an ``EngineSettings``; ``EngineSettings.manager``
builds the ``DownloadWorker`` and ``DownloadManager`` of a batch from it.

Every front door (``fetch``, ``start``, ``fetch_sync``, the CLI, the service, the Dask shards)
checks its settings and builds its engine here, so a setting means the same everywhere.  This
module sits below them all: it imports no front door (``_fetch``, ``_jobs``, ``_sync``,
``_cli``, ``service``, ``distributed``), nor ipywidgets or Rich (each front door resolves its
own display).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiohttp

from ._errors import InvalidConfigError
from ._hooks import Hooks
from ._manager import DownloadManager, make_session, per_host_cap, queue_all
from ._models import ExtractLimits, FileConfig, check_headers, check_int
from ._processors import Processor
from ._schedulers import Scheduler
from ._schedulers import resolve as resolve_scheduler
from ._storage import Storage
from ._tracker import Tracker
from ._worker import DEFAULT_CHUNK_SIZE, DownloadWorker, RetryPolicy


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """``fetch``'s engine settings, checked (see ``check_settings``); the defaults are fetch's.

    Plain values only, so it pickles to a Dask worker; but ``hooks`` and a ``Scheduler`` object
    are the caller's own (the Dask front door takes neither).
    """

    max_workers: int = 3
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    read_timeout: float | None = 60
    overwrite: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    segments: int | None = None
    #: None: the manager's default (8, or ``max_workers`` if that is more).
    max_per_host: int | None = None
    extract: bool = False
    extract_limits: ExtractLimits | None = None
    processors: tuple[Processor, ...] = ()
    hooks: Hooks | None = None
    #: As given (a name, an ``nbdl.Scheduler`` or None): each manager resolves its own.
    scheduler: Scheduler | str | None = None

    def worker(self) -> DownloadWorker:
        """A ``DownloadWorker`` with these settings (one may serve several managers)."""
        return DownloadWorker(
            retry=self.retry,
            timeout=self.timeout,
            read_timeout=self.read_timeout,
            overwrite=self.overwrite,
            segments=self.segments,
            extract=self.extract,
            extract_limits=self.extract_limits,
            processors=self.processors,
        )

    def session(self) -> aiohttp.ClientSession:
        """A session as the managers these settings build would make for themselves.

        For a caller that shares one among several batches (a Dask worker's shards).
        """
        return make_session(
            self.max_workers, per_host_cap(self.max_per_host, self.max_workers), DEFAULT_CHUNK_SIZE
        )

    def manager(
        self,
        dest: str | Path | Storage,
        *,
        tracker: Tracker,
        session: aiohttp.ClientSession | None = None,
        worker: DownloadWorker | None = None,
    ) -> DownloadManager:
        """The engine for one batch into ``dest``, reporting to ``tracker``.

        ``session`` (default: the manager makes and closes its own) is a caller's pooled one;
        ``worker`` (default: a fresh ``self.worker()``) is one several batches share, so that
        its count of open connections per host spans them (the service runs each item as a
        batch of its own).
        """
        return DownloadManager(
            dest=dest,
            max_workers=self.max_workers,
            client=session,
            tracker=tracker,
            worker=worker if worker is not None else self.worker(),
            headers=dict(self.headers),
            max_per_host=self.max_per_host,
            hooks=self.hooks,
            scheduler=self.scheduler,
        )


def plan(
    settings: EngineSettings,
    items: Iterable[str | FileConfig],
    dest: str | Path | Storage,
    *,
    tracker: Tracker,
    session: aiohttp.ClientSession | None = None,
) -> DownloadManager:
    """The batch, built and queued: every item validated, and no request made.

    Raises ``InvalidConfigError`` (a ``ValueError``) naming a bad item, or ``dest``.
    """
    if isinstance(items, str | FileConfig):
        raise InvalidConfigError(
            "items must be an iterable of URLs or FileConfig objects; wrap a single one in a list"
        )
    manager = settings.manager(dest, tracker=tracker, session=session)
    # Queue (and so validate) every item before the session opens: bad input costs no request.
    queue_all(manager, items)
    return manager


def check_settings(
    *,
    max_workers: object = 3,
    retries: object = 3,
    timeout: object = None,
    read_timeout: object = 60,
    overwrite: object = False,
    headers: object = None,
    segments: object = None,
    max_per_host: object = None,
    extract: object = False,
    extract_limits: object = None,
    processors: object = (),
    hooks: object = None,
    scheduler: object = None,
) -> EngineSettings:
    """Validate ``fetch``'s settings; raises ``InvalidConfigError`` naming the bad one."""
    workers = check_int("max_workers", max_workers, 1)
    if isinstance(retries, RetryPolicy):
        retry = retries
    else:
        retry = RetryPolicy(retries=check_int("retries", retries, 0))
    seconds = _seconds("timeout", timeout)
    read_seconds = _seconds("read_timeout", read_timeout)
    pieces = None if segments is None else check_int("segments", segments, 1)
    per_host = None if max_per_host is None else check_int("max_per_host", max_per_host, 1)
    if not isinstance(overwrite, bool):
        raise InvalidConfigError(f"overwrite must be True or False, got {overwrite!r}")
    try:
        checked = check_headers(headers) if headers is not None else {}
    except ValueError as exc:
        raise InvalidConfigError(str(exc)) from None
    if not isinstance(extract, bool):
        raise InvalidConfigError(f"extract must be True or False, got {extract!r}")
    if extract_limits is not None and not isinstance(extract_limits, ExtractLimits):
        raise InvalidConfigError(
            f"extract_limits must be an nbdl.ExtractLimits, got {extract_limits!r}"
        )
    if isinstance(processors, str) or not isinstance(processors, Iterable):
        raise InvalidConfigError(f"processors must be a list of processors, got {processors!r}")
    chosen = tuple(processors)
    for processor in chosen:
        if not isinstance(processor, Processor):
            raise InvalidConfigError(
                f"each processor needs a 'label' and a 'process(job)' method, got {processor!r}"
            )
    resolve_scheduler(scheduler)  # only to validate: each manager makes its own
    return EngineSettings(
        max_workers=workers,
        retry=retry,
        timeout=seconds,
        read_timeout=read_seconds,
        overwrite=overwrite,
        headers=checked,
        segments=pieces,
        max_per_host=per_host,
        extract=extract,
        extract_limits=extract_limits,
        processors=chosen,
        hooks=Hooks.of(hooks),
        # resolve_scheduler accepted it: a name, an nbdl.Scheduler or None.
        scheduler=cast("Scheduler | str | None", scheduler),
    )


def _seconds(name: str, value: object) -> float | None:
    """``value`` if it is None or a finite number of seconds > 0, else raise naming ``name``."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidConfigError(f"{name} must be a number of seconds > 0 or None, got {value!r}")
    return value
