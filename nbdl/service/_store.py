"""The service's queue: every item in memory for reads, and in SQLite for restarts.

Reads (the API, the page, the runner picking the next item) are served from memory, so a list
of 10,000 items never waits for the disk.  SQLite (``DIR/.nbdl/service.sqlite3``, WAL) is the
durable copy: additions, removals and user actions are written before the API answers; progress
is written in batches, at most once a second.  Every statement runs on one thread of its own:
the serving loop never waits on the disk (aria2's RPC stalls because its single loop does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from sortedcontainers import SortedDict, SortedList, SortedSet

from .._errors import BatchConflictError
from .._models import FileConfig
from .._naming import check_explicit_filename, fallback_name, name_from_url
from .._state import STATE_DIR

DB_NAME = "service.sqlite3"
LOCK_NAME = "service.lock"
_T = TypeVar("_T")


class Status(StrEnum):
    """An item's status: the engine's, plus ``paused`` (stopped by a user, resumable)."""

    QUEUED = "queued"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset({Status.PENDING, Status.IN_PROGRESS})
FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

#: The FileConfig fields a client may set, in the order they are stored.
CONFIG_FIELDS = (
    "url",
    "filename",
    "priority",
    "size_bytes",
    "checksum",
    "headers",
    "segments",
    "mirrors",
    "extract",
    "extract_to",
)


@dataclass(slots=True, eq=False)
class Item:
    """One download of the service: what was asked (``config``) and where it stands."""

    id: int
    config: FileConfig
    #: The final file name inside the folder (the engine may change it from Content-Disposition).
    name: str
    status: Status = Status.QUEUED
    bytes_downloaded: int = 0
    total_bytes: int | None = None
    attempts: int = 0
    error: str | None = None
    error_kind: str | None = None
    http_status: int | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    note: str | None = None
    #: Bytes per second over the last moments (not stored: it means nothing after a restart).
    speed: float | None = None

    @property
    def priority(self) -> int:
        """Higher starts first."""
        return self.config.priority

    def to_json(self) -> dict[str, Any]:
        """The item as the API shows it (header values are not echoed: they may be secrets)."""
        config = self.config
        eta = None
        if self.speed and self.total_bytes is not None and self.status in ACTIVE:
            eta = max(0.0, (self.total_bytes - self.bytes_downloaded) / self.speed)
        return {
            "id": self.id,
            "url": config.url,
            "filename": self.name,
            "status": self.status.value,
            "priority": config.priority,
            "bytes_downloaded": self.bytes_downloaded,
            "total_bytes": self.total_bytes,
            "speed": None if self.speed is None else round(self.speed, 1),
            "eta_seconds": None if eta is None else round(eta, 1),
            "attempts": self.attempts,
            "error": self.error,
            "error_kind": self.error_kind,
            "http_status": self.http_status,
            "note": self.note,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "checksum": config.checksum,
            "segments": config.segments,
            "mirrors": list(config.mirrors),
            "extract": config.extract,
            "extract_to": config.extract_to,
            "header_names": sorted(config.headers or {}),
        }


def default_name(config: FileConfig) -> str:
    """The file name the engine will use before any answer (it sanitises URL-derived names)."""
    if config.filename is not None:
        return check_explicit_filename(config.filename)
    return name_from_url(config.url) or fallback_name(config.url)


def config_to_json(config: FileConfig) -> str:
    """The stored form of a config."""
    values = {name: getattr(config, name) for name in CONFIG_FIELDS}
    values["mirrors"] = list(config.mirrors)
    values["headers"] = dict(config.headers) if config.headers is not None else None
    return json.dumps(values)


def config_from_json(text: str) -> FileConfig:
    """A stored config, validated again (a database edited by hand must not bypass the rules)."""
    values = json.loads(text)
    return FileConfig(**{name: values[name] for name in CONFIG_FIELDS if name in values})


_COLUMNS = (
    "id, config, name, priority, status, bytes_downloaded, total_bytes, attempts, error, "
    "error_kind, http_status, created_at, started_at, finished_at, note"
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    config TEXT NOT NULL,
    name TEXT NOT NULL,
    priority INTEGER NOT NULL,
    status TEXT NOT NULL,
    bytes_downloaded INTEGER NOT NULL DEFAULT 0,
    total_bytes INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_kind TEXT,
    http_status INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS items_queue ON items (status, priority DESC, id);
-- {_COLUMNS}
"""
_UPSERT = (
    f"INSERT INTO items ({_COLUMNS}) VALUES ({', '.join('?' * 15)}) "
    "ON CONFLICT (id) DO UPDATE SET config=excluded.config, name=excluded.name, "
    "priority=excluded.priority, status=excluded.status, "
    "bytes_downloaded=excluded.bytes_downloaded, total_bytes=excluded.total_bytes, "
    "attempts=excluded.attempts, error=excluded.error, error_kind=excluded.error_kind, "
    "http_status=excluded.http_status, created_at=excluded.created_at, "
    "started_at=excluded.started_at, finished_at=excluded.finished_at, note=excluded.note"
)


def _row(item: Item) -> tuple[object, ...]:
    return (
        item.id,
        config_to_json(item.config),
        item.name,
        item.config.priority,
        item.status.value,
        item.bytes_downloaded,
        item.total_bytes,
        item.attempts,
        item.error,
        item.error_kind,
        item.http_status,
        item.created_at,
        item.started_at,
        item.finished_at,
        item.note,
    )


class FolderBusyError(BatchConflictError):
    """Another service (in this process or another one) is serving the same folder."""


def lock_folder(state_dir: Path) -> int:
    """Take the folder's service lock (released when the fd closes, or the process dies).

    Two services on one folder would download the same items into the same ``.part`` files.
    """
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusyError(
            f"another nbdl service is already serving {state_dir.parent}; stop it first, or "
            "serve another folder"
        ) from None
    return fd


class Database:
    """The SQLite file, used from one thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="nbdl-sqlite"
        )
        self._conn: sqlite3.Connection | None = None

    async def call(self, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``function(connection)`` on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, function)

    def _run(self, function: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a power cut may lose the last second, never corrupt the file; a
            # killed process loses nothing that was committed.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            self._conn = conn
        with self._conn:
            self._conn.execute("BEGIN")
            return function(self._conn)

    async def close(self) -> None:
        """Close the connection (on its thread) and stop the thread."""

        def close(conn: sqlite3.Connection) -> None:
            conn.commit()

        if self._conn is not None:
            await self.call(close)
            conn = self._conn
            self._conn = None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)


def _load(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM items ORDER BY id").fetchall()
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
    return rows, int(seq[0]) if seq else 0


class Store:
    """Every item, by id; the queue order; counts by status; what changed since the last write."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.db = Database(dest / STATE_DIR / DB_NAME)
        self._lock: int | None = None
        self._items: SortedDict[int, Item] = SortedDict()  # id -> Item, so pages by id are cheap
        self._by_status: dict[Status, SortedSet[int]] = {status: SortedSet() for status in Status}
        #: Queued items, best first: (-priority, id).
        self._queue: SortedList[tuple[int, int]] = SortedList()
        self._names: dict[str, int] = {}
        self._urls: dict[str, int] = {}
        self._next_id = 1
        self._unsaved: set[int] = set()
        #: Told of every change (the event stream); set by the service.
        self.on_change: Callable[[Item], None] = lambda item: None
        self.on_remove: Callable[[int], None] = lambda item_id: None

    # -- loading ---------------------------------------------------------------------------------
    async def open(self) -> list[str]:
        """Load the database; items that were running become queued (they resume).

        Returns one warning per stored row that could not be loaded.
        """
        self._lock = lock_folder(self.dest / STATE_DIR)
        rows, seq = await self.db.call(_load)
        warnings = []
        for row in rows:
            try:
                item = _item_from_row(row)
            except (ValueError, TypeError, KeyError) as exc:
                warnings.append(f"item {row[0]} cannot be loaded and is skipped: {exc}")
                continue
            if item.status in ACTIVE:
                # The process stopped while it ran: the engine's .part and record resume it.
                item.status = Status.QUEUED
                item.speed = None
                self._unsaved.add(item.id)
            self._insert(item)
        self._next_id = max([seq, *self._items.keys()]) + 1
        return warnings

    # -- reads -------------------------------------------------------------------------------------
    def get(self, item_id: int) -> Item | None:
        """The item with this id, or None."""
        item: Item | None = self._items.get(item_id)
        return item

    def __len__(self) -> int:
        return len(self._items)

    def count(self, status: Status) -> int:
        """How many items have ``status``."""
        return len(self._by_status[status])

    def ids(self, statuses: Iterable[Status] | None, after: int = 0) -> Iterator[int]:
        """Item ids in increasing order, greater than ``after``, with one of ``statuses``."""
        if statuses is None:
            yield from self._items.irange(minimum=after, inclusive=(False, True))
            return
        chosen = sorted(set(statuses))
        if len(chosen) == 1:
            yield from self._by_status[chosen[0]].irange(minimum=after, inclusive=(False, True))
            return
        import heapq

        yield from heapq.merge(
            *(self._by_status[s].irange(minimum=after, inclusive=(False, True)) for s in chosen)
        )

    def total(self, statuses: Iterable[Status] | None) -> int:
        """How many items have one of ``statuses`` (all items for None)."""
        if statuses is None:
            return len(self._items)
        return sum(len(self._by_status[s]) for s in set(statuses))

    def items(self) -> Iterator[Item]:
        """Every item, by id."""
        return iter(self._items.values())

    def next_queued(self) -> Item | None:
        """The queued item to start next: highest priority, then oldest."""
        if not self._queue:
            return None
        return self.get(self._queue[0][1])

    def owner_of_name(self, name: str) -> int | None:
        """The id of the item saved as ``name``, if any."""
        return self._names.get(name)

    def owner_of_url(self, url: str) -> int | None:
        """The id of the item downloading ``url``, if any."""
        return self._urls.get(url)

    # -- changes -----------------------------------------------------------------------------------
    def _insert(self, item: Item) -> None:
        self._items[item.id] = item
        self._by_status[item.status].add(item.id)
        if item.status is Status.QUEUED:
            self._queue.add((-item.priority, item.id))
        self._names[item.name] = item.id
        self._urls[item.config.url] = item.id

    async def add(self, configs: list[FileConfig], names: list[str]) -> list[Item]:
        """Store new queued items (written to disk before this returns)."""
        items = []
        for config, name in zip(configs, names, strict=True):
            item = Item(id=self._next_id, config=config, name=name)
            self._next_id += 1
            self._insert(item)
            items.append(item)
        rows = [_row(item) for item in items]
        await self.db.call(lambda conn: conn.executemany(_UPSERT, rows))
        for item in items:
            self.on_change(item)
        return items

    def set_status(self, item: Item, status: Status) -> None:
        """Move ``item`` to ``status`` (counts and queue follow)."""
        if item.status is status:
            return
        self._by_status[item.status].discard(item.id)
        if item.status is Status.QUEUED:
            self._queue.discard((-item.priority, item.id))
        item.status = status
        self._by_status[status].add(item.id)
        if status is Status.QUEUED:
            self._queue.add((-item.priority, item.id))
        if status not in ACTIVE:
            item.speed = None
        self.changed(item)

    def set_priority(self, item: Item, priority: int) -> None:
        """Change ``item``'s priority (FileConfig checks the value)."""
        config = replace(item.config, priority=priority)
        queued = item.status is Status.QUEUED
        if queued:
            self._queue.discard((-item.priority, item.id))
        item.config = config
        if queued:
            self._queue.add((-item.priority, item.id))
        self.changed(item)

    def rename(self, item: Item, name: str) -> None:
        """The engine saves ``item`` under another name (from the server's answer)."""
        if self._names.get(item.name) == item.id:
            del self._names[item.name]
        item.name = name
        self._names.setdefault(name, item.id)
        self.changed(item)

    def changed(self, item: Item) -> None:
        """``item`` changed: it is written with the next batch and sent to the event stream."""
        self._unsaved.add(item.id)
        self.on_change(item)

    async def save(self, item: Item) -> None:
        """Write ``item`` now (user actions: they must survive a crash right after the answer)."""
        self._unsaved.discard(item.id)
        row = _row(item)
        await self.db.call(lambda conn: conn.execute(_UPSERT, row))

    async def remove(self, items: list[Item]) -> None:
        """Forget ``items`` (deleted from disk before this returns)."""
        for item in items:
            del self._items[item.id]
            self._by_status[item.status].discard(item.id)
            self._queue.discard((-item.priority, item.id))
            if self._names.get(item.name) == item.id:
                del self._names[item.name]
            if self._urls.get(item.config.url) == item.id:
                del self._urls[item.config.url]
            self._unsaved.discard(item.id)
        ids = [(item.id,) for item in items]
        await self.db.call(lambda conn: conn.executemany("DELETE FROM items WHERE id = ?", ids))
        for item in items:
            self.on_remove(item.id)

    async def flush(self) -> None:
        """Write every item changed since the last write, in one transaction."""
        if not self._unsaved:
            return
        rows = [_row(self._items[i]) for i in self._unsaved if i in self._items]
        self._unsaved.clear()
        await self.db.call(lambda conn: conn.executemany(_UPSERT, rows))

    async def close(self) -> None:
        """Write what is left, close the database and release the folder."""
        try:
            if self._lock is not None:
                await self.flush()
        finally:
            await self.db.close()
            if self._lock is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock)
                self._lock = None


def _item_from_row(row: tuple[Any, ...]) -> Item:
    (item_id, config, name, _priority, status, done, total, attempts, error, kind, http) = row[:11]
    created, started, finished, note = row[11:]
    return Item(
        id=int(item_id),
        config=config_from_json(config),
        name=check_explicit_filename(name),
        status=Status(status),
        bytes_downloaded=int(done),
        total_bytes=total,
        attempts=int(attempts),
        error=error,
        error_kind=kind,
        http_status=http,
        created_at=float(created),
        started_at=started,
        finished_at=finished,
        note=note,
    )
