"""Schedulers: the default priority order, round-robin across hosts, and schedulers of your own."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

import nbdl
from nbdl.testing import LocalServer


@pytest.fixture
def other() -> Iterator[LocalServer]:
    """A second server: another host:port for the round-robin."""
    with LocalServer() as srv:
        yield srv


async def started_order(
    items: list[str | nbdl.FileConfig], dest: Path, **options: object
) -> list[str]:
    """The order one worker starts the files in, as the 'started' hook sees it."""
    order: list[str] = []
    hooks = nbdl.Hooks().on("started", lambda event: order.append(event.info.filename))
    results = await nbdl.fetch(
        items,
        dest,
        tracker="none",
        max_workers=1,
        hooks=hooks,
        **options,
    )
    assert results.ok, results
    return order


async def test_default_order_is_priority_then_input(server: LocalServer, dest: Path) -> None:
    """Without a scheduler: highest priority first, input order among equals (as before)."""
    items: list[str | nbdl.FileConfig] = [
        server.url("/data/a", size=10),
        nbdl.FileConfig(server.url("/data/b", size=10), priority=3),
        server.url("/data/c", size=10),
        nbdl.FileConfig(server.url("/data/d", size=10), priority=3),
        nbdl.FileConfig(server.url("/data/e", size=10), priority=0),
    ]
    expected = ["b", "d", "a", "c", "e"]
    assert await started_order(items, dest) == expected
    assert await started_order(items, dest / "again", scheduler="priority") == expected


async def test_round_robin_interleaves_hosts_within_a_priority(
    server: LocalServer, other: LocalServer, dest: Path
) -> None:
    """One host's long list no longer starves another host: they take turns, priorities first."""
    items: list[str | nbdl.FileConfig] = [server.url(f"/data/a{i}", size=10) for i in range(4)]
    items += [other.url(f"/data/b{i}", size=10) for i in range(3)]
    items.append(nbdl.FileConfig(other.url("/data/urgent", size=10), priority=5))
    items.append(nbdl.FileConfig(server.url("/data/late", size=10), priority=0))
    order = await started_order(items, dest, scheduler=nbdl.RoundRobinScheduler())
    assert order == ["urgent", "a0", "b0", "a1", "b1", "a2", "b2", "a3", "late"]


async def test_a_scheduler_of_your_own(server: LocalServer, dest: Path) -> None:
    """Any object with push, pop and len orders the batch (here: last in, first out)."""

    class Newest:
        def __init__(self) -> None:
            self.urls: list[str] = []

        def push(self, url: str, priority: int) -> None:
            self.urls.append(url)

        def pop(self) -> str | None:
            return self.urls.pop() if self.urls else None

        def __len__(self) -> int:
            return len(self.urls)

    scheduler = Newest()
    assert isinstance(scheduler, nbdl.Scheduler)
    items: list[str | nbdl.FileConfig] = [server.url(f"/data/n{i}", size=10) for i in range(4)]
    assert await started_order(items, dest, scheduler=scheduler) == ["n3", "n2", "n1", "n0"]


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [
        ("fifo", "unknown scheduler 'fifo'"),
        (object(), "scheduler must be"),
    ],
)
async def test_bad_schedulers_are_refused(scheduler: object, message: str) -> None:
    """An unknown name or an object without the methods is an InvalidConfigError."""
    with pytest.raises(nbdl.InvalidConfigError, match=message):
        await nbdl.fetch(["http://127.0.0.1:1/x"], ".", scheduler=scheduler)


async def test_a_scheduler_holding_urls_is_refused() -> None:
    """A scheduler left with another batch's URLs cannot be reused (it would mix batches)."""
    used = nbdl.RoundRobinScheduler()
    used.push("http://127.0.0.1:1/x", 1)
    with pytest.raises(nbdl.InvalidConfigError, match="new one per batch"):
        await nbdl.fetch(["http://127.0.0.1:1/y"], ".", scheduler=used)


@pytest.mark.parametrize("make", [nbdl.PriorityScheduler, nbdl.RoundRobinScheduler])
def test_schedulers_hold_only_references_to_the_urls(make: type[nbdl.Scheduler]) -> None:
    """A queued URL costs a scheduler a few pointers (the manager's records stay the bulk)."""
    count = 20_000
    urls = [f"http://h{i % 7}.example:80/data/f{i:06d}.bin" for i in range(count)]
    scheduler = make()
    gc.collect()
    tracemalloc.start()
    for position, url in enumerate(urls):
        scheduler.push(url, position % 3)
    per_url = tracemalloc.get_traced_memory()[0] / count
    tracemalloc.stop()
    assert per_url < 32, f"{per_url:.0f} bytes per queued URL"
    popped = [scheduler.pop() for _ in range(count)]
    assert scheduler.pop() is None
    assert len(scheduler) == 0
    assert sorted(u for u in popped if u) == sorted(urls)
