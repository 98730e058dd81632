"""The service's locks: token, Host, Origin, rate limit, headers, loopback binding, SSRF guard."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import nbdl
from nbdl.service import Server
from nbdl.service._security import MAX_FAILURES
from nbdl.testing import LocalServer

from .conftest import FAST_RETRY


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Server]:
    server = await nbdl.serve(tmp_path / "dl", retries=FAST_RETRY)
    yield server
    await server.close()


async def raw(
    svc: Server, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, dict[str, str], str]:
    # A fresh session per call: no cookie jar, and Host/Origin exactly as given.
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.request(
            method, f"{svc.base_url}{path}", headers=headers or {}, allow_redirects=False, **kwargs
        ) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.text()


def bearer(svc: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {svc.token}"}


async def test_binds_loopback_by_default(svc: Server) -> None:
    """Without --host the service listens on 127.0.0.1 only."""
    assert svc.host == "127.0.0.1"
    assert svc.url.startswith("http://127.0.0.1:")
    assert f"token={svc.token}" in svc.url


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/v1/downloads", "/api/v1/events"])
async def test_no_token_is_401_everywhere(svc: Server, path: str) -> None:
    """The page, its files, the API and the event stream all need the token."""
    status, headers, body = await raw(svc, "GET", path)
    assert status == 401
    assert headers["Content-Type"].startswith("application/problem+json")
    assert svc.token not in body


async def test_wrong_token_is_401_and_the_right_one_works(svc: Server) -> None:
    """A wrong Bearer token is refused; the right one is accepted."""
    status, _, _ = await raw(svc, "GET", "/api/v1/stats", {"Authorization": "Bearer nope"})
    assert status == 401
    status, _, _ = await raw(svc, "GET", "/api/v1/stats", {"Authorization": "Basic x"})
    assert status == 401
    status, _, _ = await raw(svc, "GET", "/api/v1/stats", bearer(svc))
    assert status == 200
    status, _, _ = await raw(svc, "GET", "/api/v1/stats?token=" + svc.token)
    assert status == 401  # tokens in API URLs would end up in logs: only the page takes one


async def test_wrong_tokens_are_rate_limited(svc: Server) -> None:
    """After MAX_FAILURES wrong tokens a client gets 429 with Retry-After, even for a right one."""
    for _ in range(MAX_FAILURES):
        status, _, _ = await raw(svc, "GET", "/api/v1/stats", {"Authorization": "Bearer bad"})
        assert status == 401
    status, headers, _ = await raw(svc, "GET", "/api/v1/stats", {"Authorization": "Bearer bad"})
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    status, _, _ = await raw(svc, "GET", "/api/v1/stats", bearer(svc))
    assert status == 429  # else a guess could still be told apart from a miss


async def test_token_url_sets_a_strict_cookie_and_drops_the_token(svc: Server) -> None:
    """Visiting /?token= sets an HttpOnly SameSite=Strict cookie and redirects to /."""
    status, headers, _ = await raw(svc, "GET", f"/?token={svc.token}")
    assert status == 303
    assert headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    status, _, _ = await raw(svc, "GET", "/api/v1/stats", {"Cookie": f"nbdl_token={value}"})
    assert status == 200
    status, _, _ = await raw(svc, "GET", "/?token=wrong")
    assert status == 401


async def test_page_sends_security_headers(svc: Server) -> None:
    """The page forbids inline script and framing, sniffing and referrers."""
    status, headers, body = await raw(svc, "GET", "/", bearer(svc))
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "<script>" not in body  # every script is a file: CSP allows no inline one
    assert 'src="http' not in body
    assert 'href="http' not in body  # no CDN: it works offline


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1:1", "attacker.test", ""])
async def test_foreign_host_header_is_refused(svc: Server, host: str) -> None:
    """A Host the service does not answer to is refused (DNS rebinding), token or not."""
    headers = {**bearer(svc), "Host": host.format(port=svc.port)}
    status, _, _ = await raw(svc, "GET", "/api/v1/stats", headers)
    assert status == 403


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "[::1]"])
async def test_loopback_host_names_are_accepted(svc: Server, name: str) -> None:
    """The loopback names with the service's port are accepted."""
    headers = {**bearer(svc), "Host": f"{name}:{svc.port}"}
    status, _, _ = await raw(svc, "GET", "/api/v1/stats", headers)
    assert status == 200


async def cookie_for(svc: Server) -> dict[str, str]:
    _, headers, _ = await raw(svc, "GET", f"/?token={svc.token}")
    return {"Cookie": headers["Set-Cookie"].split(";")[0]}


async def test_cross_origin_post_is_refused(svc: Server) -> None:
    """A state change from another origin is refused, with the cookie or even with Bearer."""
    body = {"url": "http://127.0.0.1:9/x"}  # the discard port: refused at once
    cookie = await cookie_for(svc)
    for headers in (
        {**cookie, "Origin": "http://evil.example"},
        {**bearer(svc), "Origin": "http://evil.example"},
        {**cookie, "Origin": "null"},
        {**cookie, "Sec-Fetch-Site": "cross-site"},
        cookie,  # neither Origin nor Sec-Fetch-Site: a cookie alone is not enough
    ):
        status, _, _ = await raw(svc, "POST", "/api/v1/downloads", headers, json=body)
        assert status == 403, headers
    status, _, _ = await raw(
        svc,
        "POST",
        "/api/v1/downloads/batch",
        {**cookie, "Origin": f"http://127.0.0.1:{svc.port}"},
        json={"items": [body]},
    )
    assert status == 201  # the page itself
    status, _, _ = await raw(svc, "GET", "/api/v1/events", {**cookie, "Origin": "http://a.test"})
    assert status == 403  # cross-site EventSource hijacking


async def test_ssrf_guard_refuses_a_redirect_to_loopback(
    tmp_path: Path, server: LocalServer
) -> None:
    """With the guard on, a download redirected to 127.0.0.1 (or localhost) fails, unsent."""
    trusted = f"127.0.0.1:{server.port}"  # stands for a public server in this test
    async with await nbdl.serve(
        tmp_path / "dl", ssrf_guard=True, ssrf_exempt=(trusted,), retries=FAST_RETRY
    ) as svc:
        target_ip = f"http://127.0.0.1:{svc.port}/api/v1/stats"
        target_name = f"http://localhost:{svc.port}/api/v1/stats"
        items = [
            {"url": server.url("/redirect/2", to=target_ip), "filename": "a"},
            {"url": server.url("/redirect/1", to=target_name), "filename": "b"},
            {"url": f"http://[::1]:{svc.port}/x", "filename": "c"},
            {"url": f"http://10.0.0.1:{svc.port}/x", "filename": "d"},
            {"url": server.url("/data/ok.bin", size=10)},
        ]
        async with aiohttp.ClientSession(svc.base_url, headers=bearer(svc)) as api:
            async with api.post("/api/v1/downloads/batch", json={"items": items}) as resp:
                assert resp.status == 201
            deadline = time.monotonic() + 20
            while True:
                async with api.get("/api/v1/downloads") as resp:
                    found = (await resp.json())["items"]
                if all(i["status"] in ("completed", "failed") for i in found):
                    break
                assert time.monotonic() < deadline, found
                await asyncio.sleep(0.05)
    by_name = {i["filename"]: i for i in found}
    for name in "abcd":
        assert by_name[name]["status"] == "failed"
        assert "SSRF guard" in by_name[name]["error"]
        assert by_name[name]["attempts"] <= 1  # refused, not retried
    assert by_name["ok.bin"]["status"] == "completed"
    assert len(server.requests_for("/redirect/1")) == 2  # the hops before the refused one


async def test_binding_beyond_loopback_warns_and_guards(tmp_path: Path) -> None:
    """Listening on all addresses warns and turns the SSRF guard on by default."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server = await nbdl.serve(tmp_path / "dl", host="0.0.0.0", run_downloads=False)
    try:
        assert any("beyond this machine" in str(w.message) for w in caught)
        status, _, _ = await raw(server, "GET", "/api/v1/stats", bearer(server))
        assert status == 200
    finally:
        await server.close()


async def test_bad_tokens_are_refused_at_start(tmp_path: Path) -> None:
    """A token shorter than 8 characters is an InvalidConfigError."""
    with pytest.raises(nbdl.InvalidConfigError, match="token"):
        await nbdl.serve(tmp_path, token="short")


async def test_one_service_per_folder(svc: Server) -> None:
    """A second service on the same folder is refused: they would share partial files."""
    with pytest.raises(nbdl.BatchConflictError, match="already serving"):
        await nbdl.serve(svc.dest)
    status, _, _ = await raw(svc, "GET", "/api/v1/stats", bearer(svc))
    assert status == 200  # the first one is unharmed
