"""``nbdl.fetch``: validate everything, then download a batch with a ``DownloadManager``."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from . import _plan
from ._hooks import Hook, Hooks
from ._manager import DownloadManager
from ._models import ExtractLimits, FileConfig, Results
from ._plan import check_settings
from ._processors import Processor
from ._schedulers import Scheduler
from ._select import resolve_tracker
from ._storage import Storage
from ._tracker import Tracker
from ._worker import RetryPolicy

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

    ``fetch`` runs this plan at once, ``start`` and ``fetch_sync`` after showing its display
    from the calling cell; the checks and the engine it builds are ``nbdl._plan``'s, which the
    service and the Dask shards use too.  Raises ``InvalidConfigError`` (a ``ValueError``)
    naming a bad item or setting, ``TypeError`` for an option ``fetch`` does not have.
    """
    # fetch's own signature supplies the defaults and rejects unknown options.
    bound = inspect.signature(fetch).bind(items, dest, **options)
    bound.apply_defaults()
    a = bound.arguments
    settings = check_settings(**{name: a[name] for name in _SETTINGS})
    return _plan.plan(settings, items, dest, tracker=resolve_tracker(a["tracker"]))


#: fetch's parameters that are engine settings (the rest: the items, dest and the display).
_SETTINGS = tuple(inspect.signature(check_settings).parameters)
