"""What keeps the service to its owner: token, Host, Origin, rate limits, headers, SSRF guard.

aiohttp.web has none of these built in, so they are middlewares here, in the order a request
meets them (outermost first): security headers and problem+json errors, the Host check (DNS
rebinding), the token (Bearer header, or the cookie set by visiting ``/?token=...``; failed
attempts are rate-limited), then the Origin check of state-changing requests and the event
stream (CSRF, cross-site WebSocket/EventSource hijacking).

The SSRF guard belongs to the download side: a resolver that refuses names resolving to
loopback, private, link-local or otherwise non-global addresses, and a trace hook that refuses
such IP literals in the first URL and in every redirect (aiohttp resolves no IP literal).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from .._errors import DownloadError

COOKIE = "nbdl_token"
#: Wrong tokens one client address may present per window before it gets 429s.
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: The page's policy: only the service's own files, no inline script or style, never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, title: str, detail: str | None = None, **extra: object) -> web.Response:
    """An RFC 9457 ``application/problem+json`` answer."""
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


class Problem(Exception):
    """Raised by handlers: becomes a problem+json answer."""

    def __init__(self, status: int, title: str, detail: str | None = None, **extra: object):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self) -> web.Response:
        """The answer."""
        resp = problem(self.status, self.title, self.detail, **self.extra)
        resp.headers.update(self.headers)
        return resp


def allowed_hosts(bound: str, port: int, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """The ``Host`` values the service answers to: loopback names, the bound host, extras."""
    names = {"127.0.0.1", "localhost", "[::1]", *extra}
    if bound and bound not in ("0.0.0.0", "::"):
        names.add(f"[{bound}]" if ":" in bound else bound)
    hosts = {f"{name}:{port}".lower() for name in names}
    # Clients omit the port when it is the scheme's default.
    if port == 80:
        hosts |= {name.lower() for name in names}
    return frozenset(hosts)


class Guard:
    """The service's request checks, as aiohttp middlewares (see the module docstring)."""

    def __init__(self, token: str, hosts: frozenset[str]) -> None:
        self.token = token
        self.hosts = hosts
        self._failures: dict[str, deque[float]] = {}

    def middlewares(self) -> list[Any]:
        """The middlewares, outermost first."""
        return [self.headers_and_errors, self.host_check, self.authenticate, self.origin_check]

    @web.middleware
    async def headers_and_errors(self, request: web.Request, handler: Handler) -> Any:
        """Security headers on every answer; every error as problem+json."""
        try:
            resp = await handler(request)
        except Problem as exc:
            resp = exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            resp = problem(exc.status, exc.reason)
            if exc.status == 405:
                resp.headers["Allow"] = exc.headers.get("Allow", "")
        for name, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(name, value)
        if request.path.startswith("/api/"):
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @web.middleware
    async def host_check(self, request: web.Request, handler: Handler) -> Any:
        """Refuse Host headers the service does not answer to (DNS rebinding)."""
        host = request.headers.get("Host", "").lower()
        if host not in self.hosts:
            raise Problem(403, "Forbidden", "this Host is not one the service answers to")
        return await handler(request)

    def _limited(self, client: str) -> float | None:
        """Seconds until ``client`` may try a token again, or None."""
        failures = self._failures.get(client)
        if not failures:
            return None
        now = time.monotonic()
        while failures and failures[0] < now - FAILURE_WINDOW:
            failures.popleft()
        if len(failures) < MAX_FAILURES:
            return None
        return failures[0] + FAILURE_WINDOW - now

    def _fail(self, client: str) -> None:
        if len(self._failures) >= 10_000:
            # Many addresses guessing (beyond loopback): forget those whose window has passed.
            cutoff = time.monotonic() - FAILURE_WINDOW
            for key in [k for k, v in self._failures.items() if not v or v[-1] < cutoff]:
                del self._failures[key]
        self._failures.setdefault(client, deque(maxlen=MAX_FAILURES)).append(time.monotonic())

    def check_token(self, presented: str) -> bool:
        """Constant-time comparison with the service's token."""
        return hmac.compare_digest(presented.encode(), self.token.encode())

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> Any:
        """Require the token: Bearer header, or the cookie; ``/?token=`` sets the cookie."""
        client = request.remote or "?"
        auth = request.headers.get("Authorization", "")
        scheme, _, bearer = auth.partition(" ")
        presented: str | None = None
        if scheme.lower() == "bearer" and bearer:
            presented = bearer.strip()
        elif request.path == "/" and "token" in request.query:
            presented = request.query["token"]
        elif COOKIE in request.cookies:
            presented = request.cookies[COOKIE]
        if presented is None:
            raise Problem(
                401, "Unauthorized", "a token is required: open the URL 'nbdl serve' printed"
            )
        wait = self._limited(client)
        if wait is not None:
            exc = Problem(429, "Too Many Requests", "too many wrong tokens; try again later")
            exc.headers["Retry-After"] = str(max(1, int(wait + 1)))
            raise exc
        if not self.check_token(presented):
            self._fail(client)
            raise Problem(401, "Unauthorized", "wrong token")
        if request.path == "/" and "token" in request.query:
            # Keep the token out of the address bar, history and bookmarks: a cookie from now on.
            resp = web.Response(status=303, headers={"Location": "/"})
            resp.set_cookie(COOKIE, presented, httponly=True, samesite="Strict", path="/")
            for name, value in SECURITY_HEADERS.items():
                resp.headers[name] = value
            return resp
        return await handler(request)

    @web.middleware
    async def origin_check(self, request: web.Request, handler: Handler) -> Any:
        """State changes and the event stream must come from this origin (or carry Bearer)."""
        if request.method not in _SAFE_METHODS or request.path == "/api/v1/events":
            origin = request.headers.get("Origin")
            if origin is not None:
                if origin.lower() != f"{request.scheme}://{request.host}".lower():
                    raise Problem(403, "Forbidden", "cross-origin request refused")
            elif not _has_bearer(request) and request.headers.get("Sec-Fetch-Site") != (
                "same-origin"
            ):
                # Browsers send no Origin on a same-origin EventSource, but they do send
                # Sec-Fetch-Site; a cookie alone, with neither, is not enough.
                raise Problem(403, "Forbidden", "cross-site request refused")
        return await handler(request)


def _has_bearer(request: web.Request) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(value)


# -- SSRF guard ----------------------------------------------------------------------------------


def _refused_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True  # not an address we understand: refuse rather than guess
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _refuse(host: str, why: str) -> DownloadError:
    return DownloadError(
        f"refused by the SSRF guard: {host} {why} (start the service with ssrf_guard=False "
        "to allow it)"
    )


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing names that resolve to non-global addresses.

    ``exempt`` holds ``host:port`` pairs let through (an internal mirror one trusts).
    """

    def __init__(self, exempt: frozenset[str] = frozenset()) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._exempt = exempt

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host``; raise if any address is loopback, private, link-local, ..."""
        results = await self._inner.resolve(host, port, family)
        if f"{host}:{port}".lower() in self._exempt:
            return results
        for result in results:
            if _refused_address(result["host"]):
                # Any one refused: a name that mixes public and private addresses is a trick.
                raise _refuse(host, f"resolves to {result['host']}, not a public address")
        return results

    async def close(self) -> None:
        """Release the inner resolver."""
        await self._inner.close()


def _check_url(url: URL, exempt: frozenset[str]) -> None:
    host = url.raw_host or ""
    if f"{host}:{url.port}".lower() in exempt:
        return
    literal = host.strip("[]")
    try:
        ipaddress.ip_address(literal.split("%", 1)[0])
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    if _refused_address(literal):
        raise _refuse(host, "is not a public address")


def ssrf_trace_config(exempt: frozenset[str] = frozenset()) -> aiohttp.TraceConfig:
    """Checks IP-literal hosts of the first request and of every redirect, before it is sent."""

    async def on_start(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        _check_url(params.url, exempt)

    async def on_redirect(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestRedirectParams,
    ) -> None:
        headers = params.response.headers
        location = headers.get("Location") or headers.get("URI")
        if location:
            _check_url(params.response.url.join(URL(location)), exempt)

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    config.on_request_redirect.append(on_redirect)
    return config
