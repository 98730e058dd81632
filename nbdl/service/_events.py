"""The live event stream: numbered changes, coalesced per item, kept in a bounded ring.

Items report changes as often as the engine likes (per chunk); the hub keeps only *which* items
changed and, a few times a second, turns each into one event: ``item`` with its whole state when
it is new to the stream or its status changed, else ``progress`` with only the changed fields of
a running item.  A client needs no other request to stay current (qBittorrent's
``sync/maindata?rid=N`` sends changes since a response id; aria2 sends bare ids, UIs poll).
Every event has a sequence number (the SSE ``id:``); a client that reconnects with
``Last-Event-ID`` gets what it missed from the ring, or a ``snapshot`` event telling it to
reload when that is too old.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ._store import ACTIVE, Item, Store

#: Events kept for clients that reconnect.
RING_SIZE = 20_000
#: Seconds between two batches of events (so at most this many updates per item per second: 4).
INTERVAL = 0.25
#: More items changed than this in one batch (a big list added, a purge): one ``snapshot``
#: event tells clients to reload instead; encoding 10,000 item events held the loop for 0.4 s.
BULK = 500
#: Seconds between keep-alive comments on an idle stream (proxies drop silent connections).
KEEPALIVE = 15.0


@dataclass(frozen=True, slots=True)
class Event:
    """One numbered event, already encoded as an SSE frame."""

    seq: int
    frame: bytes


def encode(seq: int, kind: str, data: dict[str, Any]) -> bytes:
    """One SSE frame (JSON has no raw newlines, so ``data:`` is one line)."""
    payload = json.dumps(data, separators=(",", ":"))
    return f"id: {seq}\nevent: {kind}\ndata: {payload}\n\n".encode()


class EventHub:
    """Collects changes from the store and publishes them to every stream."""

    def __init__(self, store: Store, stats: Callable[[], dict[str, Any]]) -> None:
        self.store = store
        self._stats = stats
        self.seq = 0
        self._ring: deque[Event] = deque(maxlen=RING_SIZE)
        self._dirty: set[int] = set()
        self._removed: set[int] = set()
        self._last_stats: dict[str, Any] | None = None
        self._new = asyncio.Event()
        self._closed = False
        #: For speed: (time, bytes) of each active item at the last batch.
        self._samples: dict[int, tuple[float, int]] = {}
        #: What was last sent of each active item: later batches send only what changed.
        self._sent: dict[int, dict[str, Any]] = {}
        store.on_change = self._changed
        store.on_remove = self._gone

    def _changed(self, item: Item) -> None:
        self._dirty.add(item.id)

    def _gone(self, item_id: int) -> None:
        self._dirty.discard(item_id)
        self._samples.pop(item_id, None)
        self._sent.pop(item_id, None)
        self._removed.add(item_id)

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        self.seq += 1
        self._ring.append(Event(self.seq, encode(self.seq, kind, data)))

    def _speed(self, item: Item, now: float) -> None:
        """Update ``item.speed``: bytes since the last batch, smoothed."""
        if item.status not in ACTIVE:
            self._samples.pop(item.id, None)
            return
        last = self._samples.get(item.id)
        self._samples[item.id] = (now, item.bytes_downloaded)
        if last is None or now <= last[0]:
            return
        rate = max(0.0, (item.bytes_downloaded - last[1]) / (now - last[0]))
        item.speed = rate if item.speed is None else 0.5 * item.speed + 0.5 * rate

    def _publish_item(self, item: Item) -> None:
        """Publish ``item`` (the whole item), or ``progress`` (only what changed).

        ``progress`` is for a running item whose status did not change: a tenth of the bytes.
        """
        data = item.to_json()
        last = self._sent.get(item.id)
        if item.status in ACTIVE:
            self._sent[item.id] = data
        else:
            self._sent.pop(item.id, None)
        if last is None or last["status"] != data["status"] or item.status not in ACTIVE:
            self._publish("item", data)
            return
        changed = {key: value for key, value in data.items() if last.get(key) != value}
        if changed:
            self._publish("progress", {"id": item.id, **changed})

    def flush(self) -> None:
        """Turn what changed since the last batch into events and wake the streams."""
        now = time.monotonic()
        # Active items with no report in this interval are stalled: their speed decays too.
        self._dirty.update(self._samples)
        bulk = len(self._dirty) + len(self._removed) > BULK
        for item_id in sorted(self._dirty):
            item = self.store.get(item_id)
            if item is not None:
                self._speed(item, now)
                if not bulk:
                    self._publish_item(item)
        self._dirty.clear()
        if not bulk:
            for item_id in sorted(self._removed):
                self._publish("removed", {"id": item_id})
        self._removed.clear()
        stats = self._stats()
        if bulk:
            self._publish("snapshot", {"seq": self.seq + 1, "stats": stats})
        if stats != self._last_stats:
            self._last_stats = stats
            self._publish("stats", stats)
        if self._ring and self._ring[-1].seq == self.seq:
            self._new.set()
            self._new = asyncio.Event()

    async def run(self) -> None:
        """Publish a batch every ``INTERVAL`` seconds until cancelled."""
        while True:
            await asyncio.sleep(INTERVAL)
            self.flush()

    def close(self) -> None:
        """End every stream."""
        self._closed = True
        self._new.set()

    def snapshot(self) -> bytes:
        """The ``snapshot`` frame: reload the lists; totals are included."""
        return encode(self.seq, "snapshot", {"seq": self.seq, "stats": self._stats()})

    def since(self, last: int) -> list[Event] | None:
        """The events after ``last``, or None when some left the ring (or ``last`` is unknown)."""
        if last > self.seq:  # an id from an earlier run of the service
            return None
        if last == self.seq:
            return []
        if not self._ring or self._ring[0].seq > last + 1:
            return None
        # Sequence numbers in the ring are consecutive, so the start is an index.
        start = last + 1 - self._ring[0].seq
        return [self._ring[i] for i in range(start, len(self._ring))]

    async def stream(self, last: int | None) -> AsyncIterator[bytes]:
        """The frames of one client: a snapshot or what it missed, then every new batch."""
        missed = None if last is None else self.since(last)
        if missed is None:
            position = self.seq
            yield self.snapshot()
        else:
            position = last if last is not None else self.seq
            if missed:
                yield b"".join(event.frame for event in missed)
                position = missed[-1].seq
        while not self._closed:
            waiter = self._new
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KEEPALIVE):
                    await waiter.wait()
            if self._closed:
                return
            if not waiter.is_set():
                yield b": keep-alive\n\n"
                continue
            events = self.since(position)
            if events is None:  # this client fell too far behind
                position = self.seq
                yield self.snapshot()
            elif events:
                position = events[-1].seq
                yield b"".join(event.frame for event in events)
