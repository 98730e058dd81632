"""What runs on a Dask worker: one shard through nbdl's own engine, its progress, its record.

A shard task is idempotent, so Dask may run it again on another worker after one died: files
already complete cost no request, ``.part`` files and their records (on a file system every
worker shares) resume, and the shard's outcome is written last, atomically, as a small JSON in
``dest/.nbdl/shards/``.  A shard whose record says every file completed returns that record at
once: a new run after the client itself crashed does only what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from distributed import Worker, WorkerPlugin, get_worker

from .. import _state
from .._manager import DownloadManager
from .._models import DownloadInfo, DownloadStatus, FileConfig, PatchDownloadInfo, Results
from .._naming import sanitize_filename
from .._plan import EngineSettings, plan
from .._storage import is_object_url
from .._tracker import DownloadTracker
from ._results import ShardSummary
from ._stream import Item

logger = logging.getLogger("nbdl.distributed")

#: Seconds between two progress messages of a running shard: a few a second per worker at most,
#: whatever the number of files or chunks (the scheduler forwards every message to the client).
PROGRESS_EVERY = 0.5
#: Per-file changes one message carries at most; the shard's result is the authority anyway.
MAX_CHANGES = 2000
SHARDS_DIR = "shards"
_MAX_RECORD = 16 * 1024 * 1024
_RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """One shard task, but its items: they travel as scattered data (see ``run_shard``)."""

    topic: str
    index: int
    first: int
    dest: str
    #: As ``nbdl.fetch`` checks them, with this worker thread's share of ``max_per_host``.
    settings: EngineSettings
    #: True: per-file progress and every file's DownloadInfo come back; False: counts and the
    #: files that did not complete (a huge run keeps no million records on the client).
    detail: bool


def shard_key(dest: str, items: Sequence[Item]) -> str:
    """A digest of a shard's items and folder: the name of its record."""
    digest = hashlib.sha256(dest.encode())
    for item in items:
        if isinstance(item, str):
            digest.update(b"\0u" + item.encode())
        else:
            digest.update(b"\0c" + json.dumps(asdict(item), sort_keys=True).encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ShardOutcome:
    """What a shard task returns to the client: the shard's summary and the files it reports."""

    summary: ShardSummary
    #: ``(position in the shard, DownloadInfo)``: every file with ``detail``, else the ones
    #: that did not complete.
    infos: tuple[tuple[int, DownloadInfo], ...]


def url_of(item: Item) -> str:
    """The URL of a manifest item."""
    return item if isinstance(item, str) else item.url


# -- one HTTP session per worker process ------------------------------------------------------
_sessions: dict[tuple[int, int, int | None], aiohttp.ClientSession] = {}


def _shared_session(settings: EngineSettings) -> aiohttp.ClientSession:
    """The worker's session for these limits, made on first use on the worker's event loop.

    Shards that follow reuse its pooled connections and DNS cache; ``close_sessions`` (the
    worker plugin's teardown) closes it.
    """
    key = (id(asyncio.get_running_loop()), settings.max_workers, settings.max_per_host)
    session = _sessions.get(key)
    if session is None or session.closed:
        session = _sessions[key] = settings.session()
    return session


class SessionPlugin(WorkerPlugin):
    """Closes the worker's HTTP sessions when the worker shuts down."""

    #: Registered by every run; a second registration must not close sessions in use.
    idempotent = True

    async def teardown(self, worker: Worker) -> None:
        """Close every session this worker process made."""
        sessions = list(_sessions.values())
        _sessions.clear()
        for session in sessions:
            await session.close()


# -- progress ---------------------------------------------------------------------------------
class _Progress(DownloadTracker):
    """The shard's state store; it remembers which files changed since the last message."""

    def __init__(self, detail: bool) -> None:
        super().__init__()
        self._detail = detail
        # Its own list, not the store's ``_changed``: registrations are not news to send.
        self._unsent: dict[str, None] = {}
        self._sent_version = -1

    def patch_download(self, url: str, patch: PatchDownloadInfo) -> None:
        super().patch_download(url, patch)
        if self._detail:
            self._unsent[url] = None

    def message(self, index: int) -> dict[str, Any] | None:
        """What changed since the last call, as a msgpack-able dict; None if nothing did."""
        if self.version == self._sent_version:
            return None
        self._sent_version = self.version
        counts = {status: 0 for status in DownloadStatus}
        done_bytes = 0
        for info in self._downloads.values():
            counts[info.status] += 1
            done_bytes += info.bytes_downloaded
        changed = list(itertools.islice(self._unsent, MAX_CHANGES))
        for url in changed:
            del self._unsent[url]
        active = counts[DownloadStatus.IN_PROGRESS] + counts[DownloadStatus.PROCESSING]
        return {
            "shard": index,
            "completed": counts[DownloadStatus.COMPLETED],
            "failed": counts[DownloadStatus.FAILED],
            "active": active,
            "bytes": done_bytes,
            "files": [_file_fields(self._downloads[url]) for url in changed],
        }


#: The DownloadInfo fields a progress message carries per changed file, in this order.
FILE_FIELDS = (
    "url",
    "status",
    "bytes_downloaded",
    "total_bytes",
    "attempts",
    "error",
    "error_kind",
    "http_status",
    "started_at",
    "finished_at",
    "from_cache",
    "note",
)


def _file_fields(info: DownloadInfo) -> list[object]:
    values: list[object] = [getattr(info, name) for name in FILE_FIELDS]
    # msgpack knows no enums or paths; the name travels as text (a server may rename a file).
    values[1] = info.status.value
    values[6] = info.error_kind.value if info.error_kind is not None else None
    values.append(info.path.name)
    return values


async def _publish(progress: _Progress, spec: ShardSpec, send: Callable[[Any], None]) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        message = progress.message(spec.index)
        if message is not None:
            send(message)


def _sender(topic: str) -> Callable[[Any], None]:
    worker = get_worker()
    return lambda message: worker.log_event(topic, message)


# -- the task ---------------------------------------------------------------------------------
async def run_shard(spec: ShardSpec, payload: bytes) -> ShardOutcome:
    """Download one shard on this worker's event loop (a Dask task that is a coroutine).

    The items come pickled, as scattered data, not inside the task: the scheduler keeps its
    recent messages to workers (1000 per worker), and a million URLs must not stay in them.
    """
    started = time.monotonic()
    # The client pickled them (as Dask pickles every task): the same trust as the task itself.
    items: list[Item] = pickle.loads(payload)
    key = shard_key(spec.dest, items)
    dest = Path(spec.dest)
    # An object store keeps no shard records (no folder to put them in): its re-runs look at
    # each object instead (one stat, no request to the HTTP server).
    records = not is_object_url(spec.dest)
    send = _sender(spec.topic)
    worker = _worker_name()
    if records and not spec.settings.overwrite:
        recorded = _outcome_from_record(spec, items, key, worker)
        if recorded is not None:
            done = recorded.summary
            send({"shard": spec.index, "completed": done.count, "failed": 0, "active": 0,
                  "bytes": done.bytes, "files": []})  # fmt: skip
            return recorded
    progress = _Progress(spec.detail)
    session = _shared_session(spec.settings)
    manager = plan(spec.settings, items, spec.dest, tracker=progress, session=session)
    publisher = asyncio.create_task(_publish(progress, spec, send))
    running = asyncio.create_task(_run(manager))
    _running.setdefault(spec.topic, set()).add(running)
    try:
        results = await running
    finally:
        _running[spec.topic].discard(running)
        if not _running[spec.topic]:
            del _running[spec.topic]
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
    final = progress.message(spec.index)
    if final is not None:
        send(final)
    outcome = _outcome(spec, results, time.monotonic() - started, worker)
    try:
        if records:
            _save_record(dest, spec, key, outcome, results)
    except OSError as exc:
        # The files are done and verified; without a record a later run only looks at each
        # file again (no request). A link planted at the folder's name ends up here too.
        logger.warning("nbdl: shard %d: cannot write its record in %s: %s", spec.index, dest, exc)
    return outcome


async def _run(manager: DownloadManager) -> Results:
    async with manager:
        return await manager.run()


#: The engine runs of this worker process, by run (progress topic), for ``cancel_run``.
_running: dict[str, set[asyncio.Task[Results]]] = {}


async def cancel_run(topic: str) -> int:
    """Cancel this worker's shards of the run ``topic``; returns how many were running.

    Dask lets a running task finish when its key is released, so the client calls this on
    every worker (``Client.run``) when the run is cancelled: ``.part`` files stay for resume.
    """
    tasks = list(_running.get(topic, ()))
    for task in tasks:
        task.cancel()
    return len(tasks)


def _worker_name() -> str:
    return str(get_worker().address)


def _outcome(
    spec: ShardSpec, results: Sequence[DownloadInfo], seconds: float, worker: str
) -> ShardOutcome:
    counts = {status: 0 for status in DownloadStatus}
    for info in results:
        counts[info.status] += 1
    kept = tuple(
        (position, info)
        for position, info in enumerate(results)
        if spec.detail or info.status is not DownloadStatus.COMPLETED
    )
    summary = ShardSummary(
        index=spec.index,
        first=spec.first,
        count=len(results),
        completed=counts[DownloadStatus.COMPLETED],
        failed=counts[DownloadStatus.FAILED],
        cancelled=counts[DownloadStatus.CANCELLED],
        bytes=sum(info.bytes_downloaded for info in results),
        seconds=seconds,
        worker=worker,
    )
    return ShardOutcome(summary, kept)


# -- shard records ----------------------------------------------------------------------------
def _open_shards_dir(dest: Path, *, create: bool) -> int:
    """A descriptor of ``dest/.nbdl/shards``, never reached through a planted link."""
    state = _state.open_state_dir(dest, create=create)
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(SHARDS_DIR, dir_fd=state)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(SHARDS_DIR, flags, dir_fd=state)
    finally:
        os.close(state)


def _save_record(
    dest: Path, spec: ShardSpec, key: str, outcome: ShardOutcome, results: Sequence[DownloadInfo]
) -> None:
    """Write the shard's outcome atomically (a fresh temporary name, then ``os.replace``)."""
    summary = outcome.summary
    done = summary.completed == summary.count
    record: dict[str, object] = {
        "version": _RECORD_VERSION,
        "key": key,
        "index": spec.index,
        "first": spec.first,
        "count": summary.count,
        "status": "done" if done else "partial",
        "completed": summary.completed,
        "failed": summary.failed,
        "cancelled": summary.cancelled,
        "bytes": summary.bytes,
        "seconds": round(summary.seconds, 3),
        "worker": summary.worker,
        "finished_at": time.time(),
        # A complete shard's file names and sizes: enough to answer a later run without a look
        # at the files (names may come from the server, so they cannot be derived from URLs).
        "files": [[info.path.name, info.bytes_downloaded] for info in results] if done else None,
        "failures": [
            {"position": position, "url": info.url, "error": info.error}
            for position, info in enumerate(results)
            if info.status is DownloadStatus.FAILED
        ][:100],
    }
    folder = _open_shards_dir(dest, create=True)
    try:
        _state.write_json(folder, f"{key}.json", record)
    finally:
        os.close(folder)


def load_record(dest: Path, key: str) -> dict[str, Any] | None:
    """The record of the shard ``key`` in ``dest``, or None (missing, unreadable, not ours)."""
    try:
        folder = _open_shards_dir(dest, create=False)
    except OSError:
        return None
    try:
        data = _state.read_json(folder, f"{key}.json", _MAX_RECORD)
    except (OSError, ValueError):
        return None
    finally:
        os.close(folder)
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    return data


def _outcome_from_record(
    spec: ShardSpec, items: list[Item], key: str, worker: str
) -> ShardOutcome | None:
    dest = Path(spec.dest)
    record = load_record(dest, key)
    if record is None or record.get("status") != "done":
        return None
    files = record.get("files")
    if not isinstance(files, list) or len(files) != len(items):
        return None
    infos: list[tuple[int, DownloadInfo]] = []
    total = 0
    for position, (item, entry) in enumerate(zip(items, files, strict=True)):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            return None
        name, size = entry
        if not isinstance(size, int) or not name or sanitize_filename(name) != name:
            return None
        total += size
        if spec.detail:
            infos.append(
                (
                    position,
                    DownloadInfo(
                        url=url_of(item),
                        path=dest / name,
                        status=DownloadStatus.COMPLETED,
                        bytes_downloaded=size,
                        total_bytes=size,
                        priority=item.priority if isinstance(item, FileConfig) else 1,
                        from_cache=True,
                    ),
                )
            )
    summary = ShardSummary(
        index=spec.index,
        first=spec.first,
        count=len(items),
        completed=len(items),
        failed=0,
        cancelled=0,
        bytes=total,
        seconds=0.0,
        worker=worker,
        from_record=True,
    )
    return ShardOutcome(summary, tuple(infos))
