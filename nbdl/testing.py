"""A local HTTP server with fault-injecting routes, for tests, demos and offline notebooks.

It runs on 127.0.0.1 in a thread of its own, so sync code, notebooks and other processes can all
use it::

    with LocalServer() as server:
        url = server.url("/data/example.bin", size=1_000_000, fail="reset,503")
        ...
        server.requests_for("/data/example.bin")   # what the client asked for

``/data/{name}`` serves ``size`` deterministic bytes (seeded by the name) with ``ETag``,
``Last-Modified``, ``Accept-Ranges`` and proper ``Range`` / ``If-Range`` handling.  Its query
parameters inject faults:

===============  ==================================================================================
``fail``         comma list: what the 1st, 2nd, ... request for this URL gets; later ones are fine.
               ``<code>`` (e.g. ``503``) an error status; ``truncate`` close after ``at`` bytes;
               ``reset`` abort the connection after ``at`` bytes; ``stall`` send ``at`` bytes then
               wait ``stall`` s; ``norange`` ignore ``Range`` (200 + whole body); ``badrange`` 206
               with a wrong ``Content-Range``; ``longer`` a chunked body with bytes beyond the
               resource (its ``Content-Range`` stays exact); ``extra`` bytes on the wire past
               ``Content-Length``, which poison the connection for its next request;
               ``ok`` nothing.
``retry_after``  ``Retry-After`` value sent with error statuses.
``etag``       ``fixed`` (default), ``none`` (no validators), ``weak``, or ``change``: a new
               version of the content (and ETag) on every request.
``ranges``     ``yes`` (default) or ``no``: whether ``Range`` is honoured at all.
               ``Range: bytes=a-b`` (closed ranges, as segmented downloads send) is honoured.
``ifrange``    ``ignore``: honour ``Range`` even when ``If-Range`` no longer matches (a broken
               server; with ``etag=change`` it serves bytes of a new version as a 206).
``cd``         a raw ``Content-Disposition`` header value.
``delay``      seconds to wait before answering; ``rate`` bytes per second for the body.
``link``       bytes per second shared by every body being sent with ``link`` (a link, not
               each connection, is the limit: more connections do not make it faster).
``at``, ``stall``  fault position in bytes (default: half the body) and stall seconds.
===============  ==================================================================================

``/files/{name}`` serves bytes given to :meth:`LocalServer.add_file` (an archive a test or a
notebook built, say) with the same headers, ranges and faults.

Other routes: ``/redirect/{n}?to=PATH`` (``n`` hops, then ``to``), ``/loop`` (a redirect loop),
``/gzip/{name}`` (compresses whatever the client asks for).
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import hashlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

__all__ = ["LocalServer", "RequestRecord", "content_for"]

_LAST_MODIFIED = email.utils.formatdate(1_700_000_000, usegmt=True)
_CHUNK = 64 * 1024


def content_for(name: str, size: int, version: int = 0) -> bytes:
    """The deterministic bytes ``/data/{name}?size=...`` serves (for comparing in tests)."""
    return _content(name, size, version)


_cache: dict[tuple[str, int, int], bytes] = {}


def _content(name: str, size: int, version: int = 0) -> bytes:
    key = (name, size, version)
    data = _cache.get(key)
    if data is None:
        data = random.Random(f"{name}:{version}").randbytes(size)
        if size <= 64 * 1024 * 1024:
            _cache[key] = data
    return data


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    at: float


@dataclass
class _Stats:
    requests: list[RequestRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0


class LocalServer:
    """The fault-injecting server, started in a background thread on 127.0.0.1."""

    def __init__(
        self, port: int = 0, extra_routes: Callable[[web.Application], None] | None = None
    ):
        self._port = port
        self._extra_routes = extra_routes
        self._stats = _Stats()
        self._files: dict[str, bytes] = {}
        #: Bodies being sent with ``link=`` (they share its rate).
        self._link_users = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> LocalServer:
        """Start serving; returns once the port is open."""
        self._thread = threading.Thread(target=self._serve, name="nbdl-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the local server did not start")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._track])
        app.router.add_route("*", "/data/{name}", self._data)
        app.router.add_route("*", "/files/{name}", self._data)
        app.router.add_get("/gzip/{name}", self._gzip)
        app.router.add_get("/redirect/{n}", self._redirect)
        app.router.add_get("/loop", self._loop_route)
        if self._extra_routes is not None:
            self._extra_routes(app)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        await self._runner.cleanup()

    # -- helpers for tests ---------------------------------------------------------------------
    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def add_file(self, name: str, data: bytes) -> str:
        """Serve ``data`` at ``/files/{name}`` (replacing earlier bytes); returns its URL."""
        if not name or "/" in name:
            raise ValueError(f"a file name without '/', got {name!r}")
        with self._lock:
            self._files[name] = bytes(data)
        return self.url(f"/files/{name}")

    def url(self, path: str, **query: object) -> str:
        """An absolute URL on this server; keyword arguments become the query string."""
        qs = urlencode({k: str(v) for k, v in query.items()})
        return f"{self.base}{path}" + (f"?{qs}" if qs else "")

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received so far."""
        with self._lock:
            return list(self._stats.requests)

    def requests_for(self, path: str) -> list[RequestRecord]:
        """Requests whose path is ``path``."""
        return [r for r in self.requests if r.path == path]

    @property
    def max_in_flight(self) -> int:
        """The largest number of requests being answered at the same time."""
        return self._stats.max_in_flight

    def reset_stats(self) -> None:
        """Forget every request (counters for ``fail=`` included)."""
        with self._lock:
            self._stats = _Stats()

    # -- routes --------------------------------------------------------------------------------
    @web.middleware
    async def _track(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        record = RequestRecord(
            request.method, request.path, dict(request.query), dict(request.headers), time.time()
        )
        with self._lock:
            stats = self._stats
            stats.requests.append(record)
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            with self._lock:
                stats.in_flight -= 1

    def _nth(self, request: web.Request) -> int:
        """0 for the first request of this exact URL, 1 for the second, ..."""
        key = request.path_qs
        with self._lock:
            n = self._stats.counts.get(key, 0)
            self._stats.counts[key] = n + 1
        return n

    async def _data(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        name = request.match_info["name"]
        n = self._nth(request)
        faults = [f for f in q.get("fail", "").split(",") if f]
        fault = faults[n] if n < len(faults) else "ok"
        etag_mode = q.get("etag", "fixed")
        version = n if etag_mode == "change" else 0
        if request.path.startswith("/files/"):
            with self._lock:
                stored = self._files.get(name)
            if stored is None:
                return web.Response(status=404, text="no such file\n")
            body, size = stored, len(stored)
        else:
            size = int(q.get("size", "1024"))
            body = _content(name, size, version)
        if "delay" in q:
            await asyncio.sleep(float(q["delay"]))
        if fault.isdigit():
            extra = {"Retry-After": q["retry_after"]} if "retry_after" in q else {}
            return web.Response(status=int(fault), text=f"fault {fault}\n", headers=extra)

        headers: dict[str, str] = {"Content-Type": "application/octet-stream"}
        # Generated bodies are told apart by their first bytes; added files may share them.
        sample = body if request.path.startswith("/files/") else body[:4096]
        digest = hashlib.sha1(sample + str(size).encode()).hexdigest()[:16]
        etag = None
        if etag_mode in ("fixed", "change"):
            etag = f'"{digest}-{version}"'
        elif etag_mode == "weak":
            etag = f'W/"{digest}"'
        if etag:
            headers["ETag"] = etag
        if etag_mode != "none":
            headers["Last-Modified"] = _LAST_MODIFIED
        honour_ranges = q.get("ranges", "yes") == "yes"
        if honour_ranges:
            headers["Accept-Ranges"] = "bytes"
        if "cd" in q:
            headers["Content-Disposition"] = q["cd"]

        start, stop, status = 0, size, 200
        range_header = request.headers.get("Range")
        if range_header and honour_ranges and fault != "norange":
            if_range = request.headers.get("If-Range")
            if (
                if_range is None
                or if_range in (etag, headers.get("Last-Modified"))
                or q.get("ifrange") == "ignore"
            ):
                spec, _, last = range_header.removeprefix("bytes=").partition("-")
                start = int(spec) if spec.isdigit() else 0
                if last.isdigit():  # bytes=a-b: a closed range (segmented downloads)
                    stop = min(int(last) + 1, size)
                if start >= size:
                    return web.Response(
                        status=416, headers={"Content-Range": f"bytes */{size}"}, text="416\n"
                    )
                status = 206
        payload = body[start:stop]
        if status == 206:
            first = start + 7 if fault == "badrange" else start
            headers["Content-Range"] = f"bytes {first}-{stop - 1}/{size}"
        if fault != "longer":
            headers["Content-Length"] = str(len(payload))
        response = web.StreamResponse(status=status, headers=headers)
        if request.method == "HEAD":
            await response.prepare(request)
            return response
        await response.prepare(request)
        at = int(q.get("at", str(len(payload) // 2)))
        rate = float(q.get("rate", "0"))
        if fault in ("truncate", "reset", "stall"):
            await _write(response, payload[:at], rate)
            if fault == "stall":
                await asyncio.sleep(float(q.get("stall", "30")))
                await _write(response, payload[at:], rate)
                return response
            transport = request.transport
            if transport is not None:
                if fault == "reset":
                    transport.abort()
                else:
                    transport.close()
            return response
        link = float(q.get("link", "0"))
        if link:
            self._link_users += 1
            try:
                for offset in range(0, len(payload), _CHUNK):
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break  # the client closed this answer: it no longer shares the link
                    await _write(response, payload[offset : offset + _CHUNK], 0)
                    await asyncio.sleep(_CHUNK / link * self._link_users)
            finally:
                self._link_users -= 1
        else:
            await _write(response, payload, rate)
        if fault == "longer":  # chunked, so only Content-Range or a known size can tell
            await response.write(b"EXTRA BYTES BEYOND THE RESOURCE")
        elif fault == "extra":
            # Bytes past Content-Length poison the connection for whoever reuses it next.
            transport = request.transport
            if transport is not None:
                transport.write(b"EXTRA BYTES BEYOND CONTENT-LENGTH")
                transport.close()
            return response
        await response.write_eof()
        return response

    async def _gzip(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        size = int(request.query.get("size", "1024"))
        body = gzip.compress(_content(name, size))
        return web.Response(
            body=body,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
        )

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        target = request.query.get("to", "/data/redirected.bin")
        if n <= 1:
            raise web.HTTPFound(target)
        raise web.HTTPFound(f"/redirect/{n - 1}?{urlencode({'to': target})}")

    async def _loop_route(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop")


async def _write(response: web.StreamResponse, data: bytes, rate: float) -> None:
    view = memoryview(data)
    try:
        for offset in range(0, len(view), _CHUNK):
            await response.write(view[offset : offset + _CHUNK])
            if rate:
                await asyncio.sleep(_CHUNK / rate)
    except ConnectionError:
        # The client went away (cancelled, timed out): normal in these tests, not a server bug.
        pass
