"""The service: the HTTP handlers, and ``serve`` which starts them on the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from importlib import resources
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from .. import _state
from .._errors import InvalidConfigError
from .._manifest import parse_manifest
from .._models import FileConfig
from .._plan import check_settings
from .._version import USER_AGENT
from .._worker import DEFAULT_CHUNK_SIZE, RetryPolicy
from ._events import EventHub
from ._openapi import API, ROUTES, Route, check_value, openapi, parse_query
from ._runner import Runner
from ._security import (
    Guard,
    GuardedResolver,
    Problem,
    allowed_hosts,
    ssrf_trace_config,
)
from ._store import ACTIVE, CONFIG_FIELDS, FINISHED, Item, Status, Store, default_name

#: Largest request body: a 10,000-line manifest fits, a runaway upload does not.
MAX_BODY = 4 * 1024 * 1024
#: Seconds between two batched writes of progress to SQLite.
SAVE_INTERVAL = 1.0
_STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}

Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Call:
    """One API request, its query parameters and body checked against the route's schemas."""

    request: web.Request
    query: dict[str, Any]
    body: Any = None


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data, separators=(",", ":")), content_type="application/json"
    )


def _statuses(text: str | None) -> list[Status] | None:
    if text is None or not text.strip():
        return None
    try:
        return [Status(part.strip()) for part in text.split(",")]
    except ValueError:
        raise Problem(
            422,
            "Unprocessable Content",
            f"status must be a comma list of {', '.join(s.value for s in Status)}",
        ) from None


class Service:
    """The handlers of the API and the page, over one store, runner and event hub."""

    def __init__(self, store: Store, runner: Runner, hub: EventHub) -> None:
        self.store = store
        self.runner = runner
        self.hub = hub
        self._files = {
            name: (resources.files(__package__).joinpath("static", name).read_bytes(), kind)
            for name, kind in _STATIC.items()
        }
        self._document = json.dumps(openapi()).encode()

    def add_routes(self, app: web.Application) -> None:
        """Register the API (from ``ROUTES``), the page and its files."""
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._bind(route))
        app.router.add_get("/", self.page)
        app.router.add_get("/static/{name}", self.static)

    def _bind(self, route: Route) -> Handler:
        handler = getattr(self, route.handler)

        async def call(request: web.Request) -> web.StreamResponse:
            query = parse_query(route, request.query)
            body = None if route.body is None else await self._body(request, route.body)
            response: web.StreamResponse = await handler(Call(request, query, body))
            return response

        return call

    async def _body(self, request: web.Request, schema: str) -> Any:
        if request.content_type != "application/json":
            raise Problem(415, "Unsupported Media Type", "send application/json")
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            raise Problem(400, "Bad Request", "the body is not valid JSON") from None
        check_value(data, {"$ref": f"#/components/schemas/{schema}"}, "body")
        return data

    def _item(self, request: web.Request) -> Item:
        try:
            item = self.store.get(int(request.match_info["id"]))
        except ValueError:
            item = None
        if item is None:
            raise Problem(404, "Not Found", "no download with this id")
        return item

    # -- adding ------------------------------------------------------------------------------------
    def _config(self, data: dict[str, Any], where: str) -> FileConfig:
        values = {name: data[name] for name in CONFIG_FIELDS if name in data}
        if values.get("mirrors") is None:
            values.pop("mirrors", None)
        if values.get("priority") is None:
            values.pop("priority", None)
        try:
            return FileConfig(**values)
        except (ValueError, TypeError) as exc:
            raise Problem(422, "Unprocessable Content", f"{where}: {exc}") from None

    async def _add(self, configs: list[FileConfig]) -> list[Item]:
        names: list[str] = []
        seen_names: dict[str, int] = {}
        seen_urls: dict[str, int] = {}
        for position, config in enumerate(configs):
            where = f"item {position}" if len(configs) > 1 else "download"
            name = default_name(config)
            if name.endswith(_state.PART_SUFFIX):
                raise Problem(
                    422,
                    "Unprocessable Content",
                    f"{where}: {name!r} ends in {_state.PART_SUFFIX}, the suffix of partial "
                    "files; give it another filename",
                )
            for key, seen, owner, what in (
                (name, seen_names, self.store.owner_of_name(name), "saved as"),
                (config.url, seen_urls, self.store.owner_of_url(config.url), "downloading"),
            ):
                if owner is not None or key in seen:
                    other = f"download {owner}" if owner is not None else f"item {seen[key]}"
                    shown = name if what == "saved as" else "this URL"
                    raise Problem(409, "Conflict", f"{where}: {other} is already {what} {shown}")
                seen[key] = position
            names.append(name)
        items = await self.store.add(configs, names)
        self.runner.wake()
        return items

    async def add_download(self, call: Call) -> web.Response:
        """POST /downloads."""
        config = self._config(call.body, "download")
        (item,) = await self._add([config])
        return _json(item.to_json(), 201)

    async def add_batch(self, call: Call) -> web.Response:
        """POST /downloads/batch."""
        body = call.body
        if ("items" in body) == ("manifest" in body):
            raise Problem(422, "Unprocessable Content", "give either items or manifest")
        if "items" in body:
            configs = [self._config(data, f"item {i}") for i, data in enumerate(body["items"])]
        else:
            try:
                configs = parse_manifest(body["manifest"], "manifest", body.get("format"))
            except InvalidConfigError as exc:
                raise Problem(422, "Unprocessable Content", str(exc)) from None
        if not configs:
            raise Problem(422, "Unprocessable Content", "nothing to add")
        items = await self._add(configs)
        return _json(
            {"items": [item.to_json() for item in items], "total": len(items), "next_cursor": None},
            201,
        )

    # -- reading -----------------------------------------------------------------------------------
    async def list_downloads(self, call: Call) -> web.Response:
        """GET /downloads."""
        query = call.query
        statuses = _statuses(call.request.query.get("status"))
        limit = query.get("limit", 100)
        ids = self.store.ids(statuses, after=query.get("cursor", 0))
        if "offset" in query:
            ids = islice(ids, query["offset"], None)
        page = list(islice(ids, limit + 1))
        more = len(page) > limit
        page = page[:limit]
        items = [self.store.get(i) for i in page]
        return _json(
            {
                "items": [item.to_json() for item in items if item is not None],
                "total": self.store.total(statuses),
                "next_cursor": page[-1] if more else None,
            }
        )

    async def get_download(self, call: Call) -> web.Response:
        """GET /downloads/{id}."""
        return _json(self._item(call.request).to_json())

    def stats_data(self) -> dict[str, Any]:
        """Totals of the queue."""
        counts = {status.value: self.store.count(status) for status in Status}
        active = [self.store.get(i) for s in ACTIVE for i in self.store.ids([s])]
        return {
            "total": len(self.store),
            **counts,
            "running": self.runner.running,
            "max_workers": self.runner.max_workers,
            "bytes_downloaded": sum(i.bytes_downloaded for i in active if i is not None),
            "speed": round(sum(i.speed or 0.0 for i in active if i is not None), 1),
        }

    async def stats(self, call: Call) -> web.Response:
        """GET /stats."""
        return _json(self.stats_data())

    # -- changing ----------------------------------------------------------------------------------
    async def change_download(self, call: Call) -> web.Response:
        """PATCH /downloads/{id}."""
        item = self._item(call.request)
        try:
            self.store.set_priority(item, call.body["priority"])
        except ValueError as exc:
            raise Problem(422, "Unprocessable Content", str(exc)) from None
        await self.store.save(item)
        self.runner.wake()
        return _json(item.to_json())

    async def _transition(
        self, call: Call, allowed: frozenset[Status], to: Status, verb: str
    ) -> web.Response:
        item = self._item(call.request)
        if item.status not in allowed:
            raise Problem(409, "Conflict", f"a {item.status.value} download cannot be {verb}")
        if to is Status.QUEUED:
            item.error = item.error_kind = item.note = None
            item.finished_at = None
            self.store.set_status(item, to)
            self.runner.wake()
        else:
            await self.runner.stop(item, to)
        await self.store.save(item)
        return _json(item.to_json())

    async def pause_download(self, call: Call) -> web.Response:
        """POST /downloads/{id}/pause."""
        allowed = frozenset({Status.QUEUED, *ACTIVE})
        return await self._transition(call, allowed, Status.PAUSED, "paused")

    async def resume_download(self, call: Call) -> web.Response:
        """POST /downloads/{id}/resume."""
        return await self._transition(call, frozenset({Status.PAUSED}), Status.QUEUED, "resumed")

    async def cancel_download(self, call: Call) -> web.Response:
        """POST /downloads/{id}/cancel."""
        allowed = frozenset({Status.QUEUED, Status.PAUSED, *ACTIVE})
        return await self._transition(call, allowed, Status.CANCELLED, "cancelled")

    async def retry_download(self, call: Call) -> web.Response:
        """POST /downloads/{id}/retry."""
        allowed = frozenset({Status.FAILED, Status.CANCELLED})
        return await self._transition(call, allowed, Status.QUEUED, "retried")

    async def remove_download(self, call: Call) -> web.Response:
        """DELETE /downloads/{id}."""
        item = self._item(call.request)
        await self.runner.stop(item, Status.CANCELLED)
        if call.query.get("delete_file", False):
            await asyncio.to_thread(self._delete_files, item)
        await self.store.remove([item])
        return web.Response(status=204)

    def _delete_files(self, item: Item) -> None:
        """Delete the item's file, partial file and engine record: only inside the folder."""
        folder = self.store.dest.resolve()
        final = folder / item.name
        # Names are plain (sanitised when added, checked when loaded); this is the last line.
        if final.parent != folder or item.name in ("", ".", ".."):
            raise Problem(409, "Conflict", "the file is not inside the folder")
        for path in (final, _state.part_path(final)):
            # unlink never follows a symlink: a planted link is removed, not its target.
            with contextlib.suppress(FileNotFoundError):
                if path.is_dir() and not path.is_symlink():
                    continue
                path.unlink()
        _state.delete(folder, item.config.url)

    async def purge(self, call: Call) -> web.Response:
        """POST /purge."""
        statuses = _statuses(call.request.query.get("status")) or [Status.COMPLETED]
        if not set(statuses) <= FINISHED:
            raise Problem(422, "Unprocessable Content", "only finished downloads can be purged")
        items = [self.store.get(i) for i in list(self.store.ids(statuses))]
        chosen = [item for item in items if item is not None]
        await self.store.remove(chosen)
        return _json({"removed": len(chosen)})

    # -- streams, documents, the page --------------------------------------------------------------
    async def events(self, call: Call) -> web.StreamResponse:
        """GET /events: Server-Sent Events."""
        last: int | None
        try:
            last = int(call.request.headers.get("Last-Event-ID", ""))
        except ValueError:
            last = None
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(call.request)
        # EventSource reconnects after this many ms when the stream breaks.
        await resp.write(b"retry: 2000\n\n")
        with contextlib.suppress(ConnectionResetError):
            async for frame in self.hub.stream(last):
                await resp.write(frame)
        return resp

    async def openapi_document(self, call: Call) -> web.Response:
        """GET /openapi.json."""
        return web.Response(body=self._document, content_type="application/json")

    async def page(self, request: web.Request) -> web.Response:
        """GET /: the page."""
        body, kind = self._files["index.html"]
        return web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-store"})

    async def static(self, request: web.Request) -> web.Response:
        """GET /static/{name}: the page's script and style."""
        found = self._files.get(request.match_info["name"])
        if found is None:
            raise Problem(404, "Not Found", "no such file")
        body, kind = found
        return web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})


def _folder(dest: str | Path) -> Path:
    """The service's folder, made if missing (once, at start: a blocking call is fine)."""
    if not isinstance(dest, str | Path) or str(dest) == "":
        raise InvalidConfigError(f"dest must be a folder path, got {dest!r}")
    folder = Path(dest).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Server:
    """A running service; ``url`` (with the token) opens the page."""

    host: str
    port: int
    token: str
    dest: Path
    _close: Callable[[], Coroutine[Any, Any, None]]

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (IPv6 in brackets; 127.0.0.1 when bound to every address)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The page's URL with the token: visiting it sets the cookie and drops the token."""
        return f"{self.base_url}/?token={self.token}"

    @property
    def api(self) -> str:
        """The API's base URL."""
        return f"{self.base_url}{API}"

    async def close(self) -> None:
        """Stop serving; running downloads stop and stay queued for the next start."""
        await self._close()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def serve(
    dest: str | Path = ".",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 3,
    token: str | None = None,
    ssrf_guard: bool | None = None,
    max_per_host: int = 8,
    retries: int | RetryPolicy = 3,
    read_timeout: float | None = 60,
    allow_hosts: tuple[str, ...] = (),
    ssrf_exempt: tuple[str, ...] = (),
    run_downloads: bool = True,
) -> Server:
    """Start the download service on the running event loop; returns once it listens.

    ``dest`` is the folder every file goes to (its SQLite database is ``dest/.nbdl/``); items
    left unfinished by an earlier run resume.  ``port=0`` picks a free port.  ``token`` (default:
    a random one) is required by every request.  ``ssrf_guard`` refuses downloads from
    loopback, private and link-local addresses, checked at every redirect; it defaults to on
    when ``host`` is not a loopback address (which also warns).  ``allow_hosts`` adds ``Host``
    names the service answers to (e.g. the machine's name, when bound beyond loopback);
    ``ssrf_exempt`` holds ``host:port`` pairs the guard lets through (a trusted internal mirror).
    ``run_downloads=False`` keeps every item queued (for trying the API).
    """
    # The engine's checks, as nbdl.fetch makes them; each item then runs as an engine batch
    # of its own, one file at a time (the runner runs max_workers of them).
    engine = replace(
        check_settings(
            max_workers=max_workers,
            max_per_host=max_per_host,
            retries=retries,
            read_timeout=read_timeout,
        ),
        max_workers=1,
    )
    if token is not None and (not isinstance(token, str) or len(token) < 8):
        raise InvalidConfigError("token must be a string of at least 8 characters")
    token = token or secrets.token_urlsafe(32)
    loopback = _is_loopback(host)
    if not loopback:
        warnings.warn(
            f"nbdl serve: listening on {host}, beyond this machine; anyone who has the token "
            "can download into the folder (the SSRF guard refuses private addresses)",
            stacklevel=2,
        )
    guard_on = (not loopback) if ssrf_guard is None else ssrf_guard
    dest = _folder(dest)
    exempt = frozenset(pair.lower() for pair in ssrf_exempt)

    store = Store(dest)
    try:
        warnings_found = await store.open()
    except BaseException:
        await store.close()
        raise
    for text in warnings_found:
        warnings.warn(f"nbdl serve: {text}", stacklevel=2)
    connector = aiohttp.TCPConnector(
        limit=max(max_workers * max_per_host, 10),
        limit_per_host=max_per_host,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
        resolver=GuardedResolver(exempt) if guard_on else None,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        # As the engine's own session: bytes as stored, per-request timeouts from the worker.
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        timeout=aiohttp.ClientTimeout(total=None),
        read_bufsize=4 * DEFAULT_CHUNK_SIZE,
        trace_configs=[ssrf_trace_config(exempt)] if guard_on else None,
        # No proxies from the environment: a proxy would resolve names the guard cannot see.
        trust_env=False,
    )
    runner = Runner(
        store,
        session=session,
        engine=engine,
        max_workers=max_workers,
        run_downloads=run_downloads,
    )
    service: Service
    hub = EventHub(store, lambda: service.stats_data())
    service = Service(store, runner, hub)
    # The port, and so the Host values to accept, is known only once bound: until then the
    # guard accepts no Host at all.
    guard = Guard(token, frozenset())
    app = web.Application(client_max_size=MAX_BODY, middlewares=guard.middlewares())
    service.add_routes(app)
    app_runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    tasks: list[asyncio.Task[None]] = []

    async def save_loop() -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            await store.flush()

    async def close() -> None:
        hub.close()
        await app_runner.cleanup()
        await runner.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
        await session.close()

    try:
        await app_runner.setup()
        site = web.TCPSite(app_runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        bound_port = int(sockets[0].getsockname()[1])
        guard.hosts = allowed_hosts(host, bound_port, allow_hosts)
    except BaseException:
        await close()
        raise
    tasks.extend(
        asyncio.create_task(coro, name=f"nbdl-service-{name}")
        for name, coro in (("runner", runner.run()), ("events", hub.run()), ("save", save_loop()))
    )
    runner.wake()
    return Server(host, bound_port, token, dest, close)
