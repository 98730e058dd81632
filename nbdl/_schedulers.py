"""Schedulers: which queued URL a free worker downloads next.

The manager keeps one record per queued URL and gives the scheduler only the URL (a string it
holds already) and its priority, so a scheduler adds no object per entry: a 100,000-line
manifest stays as small as the records themselves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from ._errors import InvalidConfigError


@runtime_checkable
class Scheduler(Protocol):
    """Orders the queued URLs of one batch; the manager asks ``pop`` each time a worker is free.

    ``push`` is called once per queued file, before the batch runs, in input order.  A
    scheduler must hand back every pushed URL exactly once.  Use a new one per batch.
    """

    def push(self, url: str, priority: int) -> None:
        """Queue ``url`` (``FileConfig.priority``: higher should go first)."""

    def pop(self) -> str | None:
        """The URL to download next, or None when none is left."""

    def __len__(self) -> int:
        """How many URLs are still queued."""


class PriorityScheduler:
    """The default: highest priority first, input order among equals."""

    __slots__ = ("_pending", "_waiting")

    def __init__(self) -> None:
        # A deque of URLs per priority keeps input order among equals without an object per
        # entry.
        self._pending: dict[int, deque[str]] = {}
        self._waiting = 0

    def push(self, url: str, priority: int) -> None:
        """Queue ``url`` behind the others of its priority."""
        self._pending.setdefault(priority, deque()).append(url)
        self._waiting += 1

    def pop(self) -> str | None:
        """The first URL of the highest priority."""
        if not self._waiting:
            return None
        priority = max(p for p, urls in self._pending.items() if urls)
        self._waiting -= 1
        return self._pending[priority].popleft()

    def __len__(self) -> int:
        return self._waiting


class RoundRobinScheduler:
    """Highest priority first; within a priority, one URL per host in turn.

    A manifest of 10,000 files from one host followed by 10 from another then starts the other
    host's files at once instead of after the 10,000.  Hosts are ``host:port`` as in the URL.
    """

    __slots__ = ("_hosts", "_turns", "_waiting")

    def __init__(self) -> None:
        #: priority -> host -> its URLs in input order.
        self._hosts: dict[int, dict[str, deque[str]]] = {}
        #: priority -> the hosts with URLs left, in the order they get their next turn.
        self._turns: dict[int, deque[str]] = {}
        self._waiting = 0

    def push(self, url: str, priority: int) -> None:
        """Queue ``url`` behind the others of its host and priority."""
        host = _host(url)
        hosts = self._hosts.setdefault(priority, {})
        urls = hosts.get(host)
        if urls is None:
            urls = hosts[host] = deque()
            self._turns.setdefault(priority, deque()).append(host)
        urls.append(url)
        self._waiting += 1

    def pop(self) -> str | None:
        """The next URL of the host whose turn it is, at the highest priority."""
        if not self._waiting:
            return None
        priority = max(p for p, turns in self._turns.items() if turns)
        turns = self._turns[priority]
        host = turns.popleft()
        urls = self._hosts[priority][host]
        url = urls.popleft()
        if urls:
            turns.append(host)
        else:
            del self._hosts[priority][host]
        self._waiting -= 1
        return url

    def __len__(self) -> int:
        return self._waiting


def _host(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2].lower()


#: Names ``fetch(..., scheduler=...)`` accepts besides a Scheduler object.
_NAMED: dict[str, Callable[[], Scheduler]] = {
    "priority": PriorityScheduler,
    "round-robin": RoundRobinScheduler,
}


def resolve(scheduler: object) -> Scheduler:
    """A fresh scheduler for a name, or ``scheduler`` itself when it is one (and empty)."""
    if scheduler is None:
        return PriorityScheduler()
    if isinstance(scheduler, str):
        made = _NAMED.get(scheduler)
        if made is None:
            raise InvalidConfigError(
                f"unknown scheduler {scheduler!r}; use {' or '.join(map(repr, _NAMED))} "
                "or an nbdl.Scheduler"
            )
        return made()
    if not isinstance(scheduler, Scheduler):
        raise InvalidConfigError(
            f"scheduler must be a name, or have push(url, priority), pop() and len(), "
            f"got {scheduler!r}"
        )
    if len(scheduler):
        raise InvalidConfigError(
            "this scheduler still holds URLs of another batch; use a new one per batch"
        )
    return scheduler
