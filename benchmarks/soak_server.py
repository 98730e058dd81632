"""The soak test's server: a catalogue of deterministic files, and a random fault on some requests.

``SoakServer`` runs aiohttp on 127.0.0.1 in a thread of its own (the harness's main thread only
starts, kills and watches processes).  ``GET``/``HEAD /f/{name}`` serves a file of the catalogue
with a strong ``ETag``, ``Accept-Ranges: bytes`` and ``Range`` / ``If-Range`` handling, except
when the request draws a fault (see :data:`FAULT_RATES`).  Every fault injected and every body
byte written is counted, so the harness can report the re-fetch overhead.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import random
import threading
from dataclasses import dataclass, field, replace

from aiohttp import web

MIB = 1024 * 1024
#: What a request risks, per kind.  ``norange`` (200 and the whole body to a ranged request) is
#: drawn only for ranged requests; the others for any ``GET``.
FAULT_RATES: dict[str, float] = {
    "reset": 0.04,  # the connection is aborted: before the answer, or after part of the body
    "503": 0.03,  # 503 with Retry-After: 1
    "500": 0.03,
    "norange": 0.08,
    "trickle": 0.02,  # the first seconds of the body at ~20 KiB/s, then the rest at full speed
    "stall": 0.02,  # part of the body, then 1-4 s of silence, then the rest
}
#: Bodies go out in pieces of this size (a reset or a stall lands between two of them).
_CHUNK = 256 * 1024
_TRICKLE_SECONDS = 2.0
_TRICKLE_PIECE = 2048
_TRICKLE_PAUSE = 0.1


@dataclass(frozen=True, slots=True)
class SoakFile:
    """One file of the catalogue: what the server sends under ``/f/{name}``."""

    name: str
    size: int
    sha256: str

    @property
    def etag(self) -> str:
        """A strong validator: resuming needs one."""
        return f'"{self.sha256[:24]}"'


def content(seed: int, name: str, size: int) -> bytes:
    """The bytes of file ``name`` (the same for the same seed, in every run)."""
    return random.Random(f"{seed}:{name}").randbytes(size)


def file_sizes(count: int, seed: int, big: int) -> list[int]:
    """``count`` sizes: mostly small (1 B - 512 KiB), about 1 in 250 of 1-20 MiB, ``big`` of
    64-96 MiB (large enough for nbdl's automatic split) and a few empty files; shuffled."""
    rng = random.Random(f"{seed}:sizes")
    big = min(big, count)
    medium = min(count - big, max(1, count // 250))
    empty = min(count - big - medium, max(1, count // 400))
    sizes = [rng.randint(64 * MIB, 96 * MIB) for _ in range(big)]
    sizes += [rng.randint(MIB, 20 * MIB) for _ in range(medium)]
    sizes += [0] * empty
    top = math.log(512 * 1024)
    sizes += [int(math.exp(rng.uniform(0, top))) for _ in range(count - len(sizes))]
    rng.shuffle(sizes)
    return sizes


def catalogue(count: int, seed: int, big: int = 2) -> tuple[list[SoakFile], dict[str, bytes]]:
    """The files (in manifest order) and their bytes."""
    files: list[SoakFile] = []
    bodies: dict[str, bytes] = {}
    for index, size in enumerate(file_sizes(count, seed, big)):
        name = f"f{index:05d}.bin"
        body = content(seed, name, size)
        bodies[name] = body
        files.append(SoakFile(name, size, hashlib.sha256(body).hexdigest()))
    return files, bodies


@dataclass
class ServerStats:
    """What the server did so far."""

    requests: int = 0
    #: ``Range: bytes=a-``: a download resuming from the bytes it has.
    resumes: int = 0
    #: ``Range: bytes=a-b``: one piece of a segmented download.
    pieces: int = 0
    bytes_served: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Whole bodies (200 answers) sent to the end, per file: more than one means the file was
    #: fetched again from zero (a kill before it was linked, ``norange``, or two processes).
    whole_bodies: collections.Counter[str] = field(default_factory=collections.Counter)


class SoakServer:
    """The catalogue served on 127.0.0.1 with random faults, in a background thread."""

    def __init__(
        self, files: list[SoakFile], bodies: dict[str, bytes], seed: int, fault_scale: float = 1.0
    ):
        self._files = {f.name: f for f in files}
        self._bodies = bodies
        self._rng = random.Random(f"{seed}:faults")
        self._rates = {kind: rate * fault_scale for kind, rate in FAULT_RATES.items()}
        self._stats = ServerStats()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    def url(self, name: str) -> str:
        """The URL of file ``name``."""
        return f"http://127.0.0.1:{self.port}/f/{name}"

    def stats(self) -> ServerStats:
        """A copy of the counters."""
        with self._lock:
            s = self._stats
            return replace(
                s,
                faults=collections.Counter(s.faults),
                whole_bodies=collections.Counter(s.whole_bodies),
            )

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> SoakServer:
        """Start serving; returns once the port is open."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the soak server did not start")
        return self

    def stop(self) -> None:
        """Stop serving (stalled answers are dropped) and join the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/f/{name}", self._serve)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await runner.setup()
        # Loopback only: the soak test never sends or accepts traffic beyond this machine.
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    # -- serving -------------------------------------------------------------------------------
    def _draw(self, ranged: bool) -> str | None:
        """The fault this request gets, or None."""
        roll = self._rng.random()
        for kind, rate in self._rates.items():
            if kind == "norange" and not ranged:
                continue
            if roll < rate:
                return kind
            roll -= rate
        return None

    def _count(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self._stats, name, getattr(self._stats, name) + amount)

    def _fault(self, kind: str) -> None:
        with self._lock:
            self._stats.faults[kind] += 1

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        file = self._files.get(name)
        if file is None:
            raise web.HTTPNotFound()
        range_header = request.headers.get("Range")
        closed = range_header is not None and not range_header.rstrip().endswith("-")
        resume = range_header is not None and not closed
        self._count(requests=1, resumes=int(resume), pieces=int(closed))
        fault = self._draw(range_header is not None) if request.method == "GET" else None
        if fault is not None:
            self._fault(fault)
        if fault in ("500", "503"):
            headers = {"Retry-After": "1"} if fault == "503" else {}
            return web.Response(status=int(fault), text=f"injected {fault}\n", headers=headers)
        if fault == "reset" and (file.size == 0 or self._rng.random() < 0.25):
            _abort(request)  # no answer at all
            return web.Response(status=500)

        headers = {
            "ETag": file.etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        start, stop = 0, file.size
        status = 200
        if (
            range_header
            and fault != "norange"
            and request.headers.get("If-Range", file.etag) == file.etag
        ):
            parsed = _parse_range(range_header, file.size)
            if parsed is None:
                return web.Response(
                    status=416, headers={"Content-Range": f"bytes */{file.size}"}, text="416\n"
                )
            start, stop = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{file.size}"
        headers["Content-Length"] = str(stop - start)
        response = web.StreamResponse(status=status, headers=headers)
        body = memoryview(self._bodies[name])[start:stop]
        cut = self._rng.randrange(len(body)) if fault in ("reset", "stall") and body else None
        stall = self._rng.uniform(1.0, 4.0)
        try:
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            if fault == "trickle":
                body = await self._trickle(response, body)
            if cut is not None:
                await self._write(response, body[:cut])
                if fault == "reset":
                    _abort(request)
                    return response
                await asyncio.sleep(stall)
                body = body[cut:]
            await self._write(response, body)
            await response.write_eof()
        except ConnectionError:
            # The client went away (killed, timed out, gave up on a stall): that is the test.
            return response
        if status == 200:
            with self._lock:
                self._stats.whole_bodies[name] += 1
        return response

    async def _write(self, response: web.StreamResponse, data: memoryview) -> None:
        for offset in range(0, len(data), _CHUNK):
            piece = data[offset : offset + _CHUNK]
            await response.write(piece)
            self._count(bytes_served=len(piece))

    async def _trickle(self, response: web.StreamResponse, body: memoryview) -> memoryview:
        """Send the first ~2 s of ``body`` slowly; returns what is left."""
        loop = asyncio.get_running_loop()
        until = loop.time() + _TRICKLE_SECONDS
        while body and loop.time() < until:
            await self._write(response, body[:_TRICKLE_PIECE])
            body = body[_TRICKLE_PIECE:]
            await asyncio.sleep(_TRICKLE_PAUSE)
        return body


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-`` or ``bytes=a-b`` as (start, stop); None when it cannot be satisfied."""
    first, _, last = header.removeprefix("bytes=").partition("-")
    if not first.isdigit():
        return None
    start = int(first)
    stop = min(int(last) + 1, size) if last.isdigit() else size
    if start >= size or stop <= start:
        return None
    return start, stop
