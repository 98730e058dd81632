"""What a cluster run returns: one ``nbdl.Results`` for the manifest, plus a summary per shard."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .._models import DownloadInfo, Results, format_bytes


@dataclass(frozen=True, slots=True)
class ShardSummary:
    """How one shard went: items ``first`` to ``first + count - 1`` of the manifest."""

    index: int
    first: int
    count: int
    completed: int
    failed: int
    cancelled: int
    #: Bytes of this shard's files on disk at the end (complete files and partial ones).
    bytes: int
    #: Seconds the shard task ran on its worker (0 when its record answered).
    seconds: float
    #: The worker that ran it last ("" when it never ran).
    worker: str
    #: True when the shard's record said every file was complete, so nothing ran at all.
    from_record: bool = False
    #: Why the task itself failed (a worker lost too often, say); its files are FAILED.
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when every file of the shard completed."""
        return self.completed == self.count


class ClusterResults(Results):
    """The outcome of ``nbdl.distributed.fetch``: a ``Results`` with the cluster's view added.

    With ``keep="all"`` it holds one ``DownloadInfo`` per manifest item, in input order, like
    ``nbdl.fetch``'s.  With ``keep="failures"`` (a huge manifest) it holds only the files that did
    not complete, still in input order; ``total`` and the counts describe the whole manifest and
    ``complete`` is False.  ``shards`` has a :class:`ShardSummary` per shard, in order.
    """

    __slots__ = ("complete", "shards", "total")

    def __init__(
        self,
        items: Sequence[DownloadInfo],
        *,
        shards: Sequence[ShardSummary],
        complete: bool,
    ) -> None:
        super().__init__(items)
        self.shards = tuple(shards)
        #: True when every manifest item has its DownloadInfo here (``keep="all"``).
        self.complete = complete
        #: The number of manifest items.
        self.total = sum(shard.count for shard in self.shards)

    @property
    def completed_count(self) -> int:
        """How many manifest items completed (also when their records are not kept)."""
        return sum(shard.completed for shard in self.shards)

    @property
    def failed_count(self) -> int:
        """How many manifest items failed."""
        return sum(shard.failed for shard in self.shards)

    @property
    def ok(self) -> bool:
        """True when every manifest item completed."""
        return self.completed_count == self.total

    def _summary(self) -> str:
        counts = [f"{self.completed_count} completed"]
        if self.failed_count:
            counts.append(f"{self.failed_count} failed")
        cancelled = sum(shard.cancelled for shard in self.shards)
        if cancelled:
            counts.append(f"{cancelled} cancelled")
        size = format_bytes(sum(shard.bytes for shard in self.shards))
        return f"{self.total} files in {len(self.shards)} shards: {', '.join(counts)}; {size}"
