"""A response body read in the pieces it arrived in, without copying them.

aiohttp's ``StreamReader.read(n)`` joins whatever it has buffered, up to ``n`` bytes, into one new
``bytes``: a copy of every byte.  ``Body`` hands over the chunks the connection delivered (as
views, so that a piece's end can fall inside one) and keeps the rest for the next read.

Those chunks are what asyncio's transport allocates for each ``recv``: 256 KiB, above glibc's
initial mmap threshold (128 KiB).  glibc raises that threshold, and the heap's trim threshold
with it, only when a large mmapped block is freed; until then each 256 KiB buffer freed at the
top of the heap is trimmed away and the next one faults fresh pages in.  Reading 1 GiB from
loopback took 200,000 page faults that way, and 0.8-3 s of system time on a VM whose host takes
freed memory back (see benchmarks/README.md), where curl took 640 faults.  One 4 MiB block,
freed before the first body is read, puts glibc where a process that once freed a 4 MiB buffer
is anyway (mmap threshold 4 MiB, trim threshold 8 MiB; glibc keeps adjusting them as before):
7,000 faults, and system time below curl's.
"""

from __future__ import annotations

import aiohttp

_EMPTY = memoryview(b"")
#: Freed once per process before the first body (see the module's docstring).
_NUDGE_BYTES = 4 * 1024 * 1024
_nudged = False


def _nudge_allocator() -> None:
    global _nudged
    if not _nudged:
        _nudged = True
        # calloc: fresh mmapped pages are zero already, so this touches none of them.
        bytes(_NUDGE_BYTES)


class Body:
    """Reads ``resp``'s body as views of the chunks the connection delivered."""

    __slots__ = ("_readchunk", "_rest")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        _nudge_allocator()
        self._readchunk = resp.content.readchunk
        self._rest = _EMPTY

    async def read(self, limit: int) -> memoryview:
        """At most ``limit`` bytes (``limit`` >= 1), or an empty view at the end of the body.

        What is left of a chunk beyond ``limit`` is the start of the next read.
        """
        if not self._rest:
            while True:
                data, end_of_http_chunk = await self._readchunk()
                # (b"", True) marks the end of one chunk of a chunked body, (b"", False) the
                # end of the body.
                if data or not end_of_http_chunk:
                    break
            self._rest = memoryview(data)
        chunk, self._rest = self._rest[:limit], self._rest[limit:]
        return chunk
