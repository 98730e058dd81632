"""``nbdl.fetch``: validate everything, then download a batch with a ``DownloadManager``."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from ._errors import InvalidConfigError
from ._hooks import Hook, Hooks
from ._manager import DownloadManager, queue_all
from ._models import ExtractLimits, FileConfig, Results, check_headers, check_int
from ._processors import Processor
from ._schedulers import Scheduler
from ._schedulers import resolve as resolve_scheduler
from ._select import resolve_tracker
from ._storage import Storage
from ._tracker import Tracker
from ._worker import DownloadWorker, RetryPolicy

TrackerChoice = str | Tracker


async def fetch(
    items: Iterable[str | FileConfig],
    dest: str | Path | Storage = ".",
    *,
    max_workers: int = 3,
    tracker: TrackerChoice = "auto",
    retries: int | RetryPolicy = 3,
    # The public contract names it `timeout`: it bounds each download, not this call.
    timeout: float | None = None,  # noqa: ASYNC109
    read_timeout: float | None = 60,
    overwrite: bool = False,
    headers: Mapping[str, str] | None = None,
    segments: int | None = None,
    max_per_host: int | None = None,
    extract: bool = False,
    extract_limits: ExtractLimits | None = None,
    processors: Sequence[Processor] = (),
    hooks: Hooks | Mapping[str, Hook | Sequence[Hook]] | None = None,
    scheduler: Scheduler | str | None = None,
) -> Results:
    """Download every item into ``dest`` concurrently and return one result per item.

    ``dest`` is a local folder, an object-store URL (``s3://bucket/prefix``, ``gs://...``,
    ``az://...``, ``memory://name``; needs ``nbdl[cloud]``) or an ``nbdl.Storage``: bodies then
    stream into the store, verified before an object appears (see ``nbdl.ObjectStorage``).

    Every item and setting is validated before the first request: a bad one raises
    ``InvalidConfigError`` (a ``ValueError``) naming it, and nothing is downloaded.  A file that
    fails is reported in the results, never raised; see ``Results.raise_for_errors()``.

    Large files are fetched as several byte ranges at once when the server allows it:
    ``segments=None`` decides per file: a file of 8 MiB or more starts on one connection and
    adds more while they make it faster (a server capping each connection), none on a fast link;
    ``segments=N`` uses up to N, ``segments=1`` never splits (``FileConfig(segments=...)``
    overrides it per file).  ``max_per_host`` caps the connections open to one host at a time,
    segments included; ``None`` means 8, or ``max_workers`` if that is more.

    ``extract=True`` extracts every archive once it is verified (``FileConfig(extract=...)``
    decides per file), safely and once: see ``nbdl.Extract`` and ``extract_limits``.
    ``processors`` run on every verified file after that (see ``nbdl.Processor``).

    ``hooks`` (an ``nbdl.Hooks``, or ``{"completed": [fn], ...}``) are told of every file's
    events, off the download path.  ``scheduler`` picks the next file for a free worker:
    ``"priority"`` (the default), ``"round-robin"`` (hosts take turns within a priority) or an
    ``nbdl.Scheduler``.
    """
    # Every parameter, as passed: the plan validates and applies them (see ``plan``).
    options = {name: value for name, value in locals().items() if name not in ("items", "dest")}
    manager = plan(items, dest, options)
    async with manager:
        return await manager.run()


class FetchOptions(TypedDict, total=False):
    """The keyword options of ``nbdl.fetch`` (see its docstring), for ``start``/``fetch_sync``."""

    max_workers: int
    tracker: TrackerChoice
    retries: int | RetryPolicy
    timeout: float | None
    read_timeout: float | None
    overwrite: bool
    headers: Mapping[str, str] | None
    segments: int | None
    max_per_host: int | None
    extract: bool
    extract_limits: ExtractLimits | None
    processors: Sequence[Processor]
    hooks: Hooks | Mapping[str, Hook | Sequence[Hook]] | None
    scheduler: Scheduler | str | None


def plan(
    items: Iterable[str | FileConfig], dest: str | Path | Storage, options: Mapping[str, Any]
) -> DownloadManager:
    """The batch ``fetch`` would run, validated and queued: every check, once, and no request.

    Every front door runs this plan: ``fetch`` at once, ``start`` and ``fetch_sync`` after
    showing its display from the calling cell.  Raises ``InvalidConfigError`` (a ``ValueError``)
    naming a bad item or setting, ``TypeError`` for an option ``fetch`` does not have.
    """
    # fetch's own signature supplies the defaults and rejects unknown options.
    bound = inspect.signature(fetch).bind(items, dest, **options)
    bound.apply_defaults()
    a = bound.arguments
    settings = check_settings(**{name: a[name] for name in _SETTINGS})
    worker = DownloadWorker(
        retry=settings.retry,
        timeout=a["timeout"],
        read_timeout=a["read_timeout"],
        overwrite=a["overwrite"],
        segments=a["segments"],
        extract=a["extract"],
        extract_limits=a["extract_limits"],
        processors=settings.processors,
    )
    if isinstance(items, str | FileConfig):
        raise InvalidConfigError(
            "items must be an iterable of URLs or FileConfig objects; wrap a single one in a list"
        )
    manager = DownloadManager(
        dest=dest,
        max_workers=a["max_workers"],
        tracker=resolve_tracker(a["tracker"]),
        worker=worker,
        headers=settings.headers,
        max_per_host=a["max_per_host"],
        hooks=settings.hooks,
        scheduler=a["scheduler"],
    )
    # Queue (and so validate) every item before the session opens: bad input costs no request.
    queue_all(manager, items)
    return manager


@dataclass(frozen=True, slots=True)
class _Settings:
    retry: RetryPolicy
    headers: dict[str, str]
    processors: tuple[Processor, ...]
    hooks: Hooks | None = None


def check_settings(
    *,
    max_workers: object,
    retries: object,
    timeout: object,
    read_timeout: object,
    overwrite: object,
    headers: object,
    segments: object = None,
    max_per_host: object = None,
    extract: object = False,
    extract_limits: object = None,
    processors: object = (),
    hooks: object = None,
    scheduler: object = None,
) -> _Settings:
    """Validate ``fetch``'s settings; raises ``InvalidConfigError`` naming the bad one."""
    check_int("max_workers", max_workers, 1)
    if isinstance(retries, RetryPolicy):
        retry = retries
    else:
        retry = RetryPolicy(retries=check_int("retries", retries, 0))
    for name, value in (("timeout", timeout), ("read_timeout", read_timeout)):
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise InvalidConfigError(
                f"{name} must be a number of seconds > 0 or None, got {value!r}"
            )
    if segments is not None:
        check_int("segments", segments, 1)
    if max_per_host is not None:
        check_int("max_per_host", max_per_host, 1)
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
    resolve_scheduler(scheduler)  # only to validate: the manager makes its own
    return _Settings(retry, checked, chosen, Hooks.of(hooks))


_SETTINGS = tuple(inspect.signature(check_settings).parameters)
