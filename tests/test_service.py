"""The web service's JSON API: a real server on 127.0.0.1 downloading from LocalServer."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import nbdl
from nbdl.service import Server
from nbdl.testing import LocalServer, content_for

from .conftest import FAST_RETRY


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Server]:
    server = await nbdl.serve(tmp_path / "dl", retries=FAST_RETRY, max_workers=2)
    yield server
    await server.close()


@pytest.fixture
async def api(svc: Server) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {svc.token}"}
    async with aiohttp.ClientSession(f"{svc.base_url}", headers=headers) as session:
        yield session


async def call(
    api: aiohttp.ClientSession, method: str, path: str, status: int = 200, **kwargs: Any
) -> Any:
    async with api.request(method, f"/api/v1{path}", **kwargs) as resp:
        text = await resp.text()
        assert resp.status == status, text
        if resp.content_type in ("application/json", "application/problem+json"):
            return await resp.json(content_type=None)
        return text


async def until(
    api: aiohttp.ClientSession, item_id: int, test: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        item: dict[str, Any] = await call(api, "GET", f"/downloads/{item_id}")
        if test(item):
            return item
        assert time.monotonic() < deadline, item
        await asyncio.sleep(0.05)


def status_is(*statuses: str) -> Callable[[dict[str, Any]], bool]:
    return lambda item: item["status"] in statuses


async def test_add_one_and_many_then_complete_byte_exact(
    svc: Server, api: aiohttp.ClientSession, server: LocalServer
) -> None:
    """Items added one by one and as a batch all complete with exactly the served bytes."""
    one = await call(
        api, "POST", "/downloads", 201, json={"url": server.url("/data/one.bin", size=300_000)}
    )
    assert one["status"] == "queued"
    assert one["filename"] == "one.bin"
    batch = await call(
        api,
        "POST",
        "/downloads/batch",
        201,
        json={
            "items": [
                {"url": server.url("/data/two.bin", size=1000), "priority": 5},
                {"url": server.url("/data/three.bin", size=10), "filename": "renamed.dat"},
            ]
        },
    )
    assert [i["filename"] for i in batch["items"]] == ["two.bin", "renamed.dat"]
    manifest = f"{server.url('/data/four.bin', size=70)}  filename=four.txt priority=2\n"
    added = await call(api, "POST", "/downloads/batch", 201, json={"manifest": manifest})
    assert added["items"][0]["filename"] == "four.txt"
    for item_id in range(1, 5):
        done = await until(api, item_id, status_is("completed"))
        assert done["bytes_downloaded"] == done["total_bytes"]
    assert (svc.dest / "one.bin").read_bytes() == content_for("one.bin", 300_000)
    assert (svc.dest / "renamed.dat").read_bytes() == content_for("three.bin", 10)
    assert (svc.dest / "four.txt").read_bytes() == content_for("four.bin", 70)
    stats = await call(api, "GET", "/stats")
    assert stats["total"] == 4
    assert stats["completed"] == 4


async def test_list_filters_and_pages(tmp_path: Path, server: LocalServer) -> None:
    """The list filters by status and pages by cursor or offset, oldest first, none twice."""
    async with await nbdl.serve(tmp_path / "dl", run_downloads=False) as svc:
        headers = {"Authorization": f"Bearer {svc.token}"}
        async with aiohttp.ClientSession(svc.base_url, headers=headers) as api:
            items = [{"url": server.url(f"/data/f{i}.bin", size=10)} for i in range(25)]
            await call(api, "POST", "/downloads/batch", 201, json={"items": items})
            await call(api, "POST", "/downloads/3/pause")
            seen: list[int] = []
            cursor = 0
            while True:
                page = await call(api, "GET", f"/downloads?limit=10&cursor={cursor}")
                assert page["total"] == 25
                seen += [item["id"] for item in page["items"]]
                if page["next_cursor"] is None:
                    break
                cursor = page["next_cursor"]
            assert seen == list(range(1, 26))
            page = await call(api, "GET", "/downloads?limit=5&offset=20")
            assert [item["id"] for item in page["items"]] == [21, 22, 23, 24, 25]
            paused = await call(api, "GET", "/downloads?status=paused")
            assert [item["id"] for item in paused["items"]] == [3]
            assert paused["total"] == 1
            both = await call(api, "GET", "/downloads?status=paused,queued&limit=3")
            assert [item["id"] for item in both["items"]] == [1, 2, 3]
            bad = await call(api, "GET", "/downloads?status=nonsense", 422)
            assert "status" in bad["detail"]
            await call(api, "GET", "/downloads?limit=0", 422)
            await call(api, "GET", "/downloads?limit=abc", 422)


async def test_pause_resume_continues_with_range(
    svc: Server, api: aiohttp.ClientSession, server: LocalServer
) -> None:
    """Pausing keeps the partial file; resuming continues it with a Range request."""
    url = server.url("/data/slow.bin", size=2_000_000, rate=2_000_000)
    item = await call(api, "POST", "/downloads", 201, json={"url": url})
    await until(api, item["id"], lambda i: i["bytes_downloaded"] > 300_000)
    paused = await call(api, "POST", f"/downloads/{item['id']}/pause")
    assert paused["status"] == "paused"
    assert (svc.dest / "slow.bin.part").stat().st_size > 0
    await call(api, "POST", f"/downloads/{item['id']}/pause", 409)
    await call(api, "POST", f"/downloads/{item['id']}/resume")
    await until(api, item["id"], status_is("completed"))
    assert (svc.dest / "slow.bin").read_bytes() == content_for("slow.bin", 2_000_000)
    ranges = [r.headers.get("Range") for r in server.requests_for("/data/slow.bin")]
    assert ranges[0] is None
    assert ranges[-1] is not None
    assert ranges[-1].startswith("bytes=")


async def test_cancel_retry_and_failures(
    svc: Server, api: aiohttp.ClientSession, server: LocalServer
) -> None:
    """Cancel stops a download, retry queues it again; a 404 fails with the server's status."""
    slow = server.url("/data/c.bin", size=1_000_000, rate=500_000)
    item = await call(api, "POST", "/downloads", 201, json={"url": slow})
    await until(api, item["id"], status_is("in_progress"))
    cancelled = await call(api, "POST", f"/downloads/{item['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    assert cancelled["error"] == "cancelled"
    await call(api, "POST", f"/downloads/{item['id']}/resume", 409)
    await call(api, "POST", f"/downloads/{item['id']}/retry")
    await until(api, item["id"], status_is("completed"))
    await call(api, "POST", f"/downloads/{item['id']}/retry", 409)
    missing = await call(
        api, "POST", "/downloads", 201, json={"url": server.url("/data/m.bin", fail="404")}
    )
    failed = await until(api, missing["id"], status_is("failed"))
    assert failed["http_status"] == 404
    assert "404" in failed["error"]
    assert failed["error_kind"] == "http"
    again = await call(api, "POST", f"/downloads/{missing['id']}/retry")
    assert again["status"] in ("queued", "pending", "in_progress", "completed")
    await until(api, missing["id"], status_is("completed"))


async def test_priority_decides_what_starts_next(tmp_path: Path, server: LocalServer) -> None:
    """With one slot, the queued item whose priority was raised starts before older ones."""
    async with await nbdl.serve(tmp_path / "dl", max_workers=1) as svc:
        headers = {"Authorization": f"Bearer {svc.token}"}
        async with aiohttp.ClientSession(svc.base_url, headers=headers) as api:
            first = server.url("/data/first.bin", size=400_000, rate=1_000_000)
            await call(api, "POST", "/downloads", 201, json={"url": first})
            items = [{"url": server.url(f"/data/p{i}.bin", size=10)} for i in range(3)]
            await call(api, "POST", "/downloads/batch", 201, json={"items": items})
            changed = await call(api, "PATCH", "/downloads/4", json={"priority": 9})
            assert changed["priority"] == 9
            await call(api, "PATCH", "/downloads/4", 422, json={"priority": "high"})
            await call(api, "PATCH", "/downloads/99", 404, json={"priority": 1})
            for item_id in (2, 3, 4):
                await until(api, item_id, status_is("completed"))
            starts = {
                i: (await call(api, "GET", f"/downloads/{i}"))["started_at"] for i in (2, 3, 4)
            }
            assert starts[4] < starts[2] < starts[3]


async def test_remove_and_delete_file_stays_inside_the_folder(
    svc: Server, api: aiohttp.ClientSession, server: LocalServer, tmp_path: Path
) -> None:
    """Removing with delete_file deletes the item's own file only; a planted link's target stays."""
    item = await call(api, "POST", "/downloads", 201, json={"url": server.url("/data/r.bin")})
    await until(api, item["id"], status_is("completed"))
    await call(api, "DELETE", f"/downloads/{item['id']}?delete_file=true", 204)
    assert not (svc.dest / "r.bin").exists()
    await call(api, "GET", f"/downloads/{item['id']}", 404)
    await call(api, "DELETE", f"/downloads/{item['id']}", 404)
    # A link planted where the file would be: removing the item removes the link, not the target.
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    kept = await call(
        api,
        "POST",
        "/downloads",
        201,
        json={"url": server.url("/data/k.bin", fail="404"), "filename": "link.bin"},
    )
    await until(api, kept["id"], status_is("failed"))
    (svc.dest / "link.bin").symlink_to(outside)
    await call(api, "DELETE", f"/downloads/{kept['id']}?delete_file=1", 204)
    assert outside.read_text() == "keep me"
    assert not (svc.dest / "link.bin").is_symlink()
    stays = await call(api, "POST", "/downloads", 201, json={"url": server.url("/data/s.bin")})
    await until(api, stays["id"], status_is("completed"))
    await call(api, "DELETE", f"/downloads/{stays['id']}", 204)
    assert (svc.dest / "s.bin").exists()


async def test_purge_forgets_completed_only(
    svc: Server, api: aiohttp.ClientSession, server: LocalServer
) -> None:
    """Purge forgets completed items (their files stay) and keeps failed ones unless asked."""
    ok = await call(api, "POST", "/downloads", 201, json={"url": server.url("/data/ok.bin")})
    bad = await call(
        api, "POST", "/downloads", 201, json={"url": server.url("/data/b.bin", fail="404")}
    )
    await until(api, ok["id"], status_is("completed"))
    await until(api, bad["id"], status_is("failed"))
    assert (await call(api, "POST", "/purge"))["removed"] == 1
    assert (svc.dest / "ok.bin").exists()
    await call(api, "GET", f"/downloads/{bad['id']}")
    await call(api, "POST", "/purge?status=queued", 422)
    assert (await call(api, "POST", "/purge?status=failed"))["removed"] == 1
    assert (await call(api, "GET", "/stats"))["total"] == 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"url": "ftp://example.org/x"}, "http"),
        ({"url": "file:///etc/passwd"}, "http"),
        ({"url": "javascript:alert(1)"}, "http"),
        ({"url": "http://h/x", "filename": "../escape.bin"}, "plain file name"),
        ({"url": "http://h/x", "filename": "/etc/passwd"}, "plain file name"),
        ({"url": "http://h/x", "filename": "a/b"}, "plain file name"),
        ({"url": "http://h/x", "filename": ".."}, "plain file name"),
        ({"url": "http://h/x", "extract_to": "../up"}, "extract_to"),
        ({"url": "http://h/x", "checksum": "sha256:zz"}, "sha256"),
        ({"url": "http://h/x", "headers": {"X": "a\r\nInjected: 1"}}, "header"),
        ({"url": "http://h/x", "priority": True}, "priority"),
        ({"url": "http://h/x", "filename": "x.bin.part"}, ".part"),
        ({"url": "http://h/x", "unknown": 1}, "unknown"),
        ({"filename": "x"}, "url"),
        ({"url": "http://h/x", "segments": 0}, "segments"),
    ],
)
async def test_invalid_downloads_are_422_problems(
    svc: Server, api: aiohttp.ClientSession, body: dict[str, Any], needle: str
) -> None:
    """Hostile or malformed input is refused with a problem+json naming what is wrong."""
    async with api.post("/api/v1/downloads", json=body) as resp:
        assert resp.status == 422
        assert resp.content_type == "application/problem+json"
        problem = await resp.json(content_type=None)
    assert problem["status"] == 422
    assert needle in problem["detail"]
    assert list(svc.dest.iterdir()) in ([], [svc.dest / ".nbdl"])


async def test_malformed_bodies(svc: Server, api: aiohttp.ClientSession) -> None:
    """Broken JSON is 400, a wrong media type 415, an oversized body 413, a bad batch 422."""
    headers = {"Content-Type": "application/json"}
    await call(api, "POST", "/downloads", 400, data=b"{not json", headers=headers)
    await call(api, "POST", "/downloads", 415, data=b"url=x")
    huge = b'{"url": "http://h/' + b"a" * (5 * 1024 * 1024) + b'"}'
    await call(api, "POST", "/downloads", 413, data=huge, headers=headers)
    await call(api, "POST", "/downloads/batch", 422, json={})
    await call(api, "POST", "/downloads/batch", 422, json={"items": [], "manifest": ""})
    bad = await call(
        api,
        "POST",
        "/downloads/batch",
        422,
        json={"items": [{"url": "http://h/a"}, {"url": "gopher://h/b"}]},
    )
    assert "items[1].url must be an absolute http(s) URL" in bad["detail"]
    assert (await call(api, "GET", "/stats"))["total"] == 0  # all or nothing


async def test_conflicting_names_and_urls_are_409(tmp_path: Path) -> None:
    """Two items can never share a URL or a file name (they would share a partial file)."""
    async with await nbdl.serve(tmp_path / "dl", run_downloads=False) as svc:
        headers = {"Authorization": f"Bearer {svc.token}"}
        async with aiohttp.ClientSession(svc.base_url, headers=headers) as api:
            await _conflicts(api)


async def _conflicts(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", "/downloads", 201, json={"url": "http://192.0.2.1/a/x.bin"})
    await call(api, "POST", "/downloads", 409, json={"url": "http://192.0.2.1/a/x.bin"})
    await call(api, "POST", "/downloads", 409, json={"url": "http://192.0.2.1/b/x.bin"})
    batch = [{"url": "http://192.0.2.1/c/y.bin"}, {"url": "http://192.0.2.1/d/y.bin"}]
    problem = await call(api, "POST", "/downloads/batch", 409, json={"items": batch})
    assert "item 0" in problem["detail"]


async def test_hostile_server_names_stay_in_the_folder(
    svc: Server, api: aiohttp.ClientSession, server: LocalServer
) -> None:
    """Traversal in the URL path or in Content-Disposition never leaves the folder."""
    evil = server.url("/data/x.bin", size=50, cd='attachment; filename="../../evil.sh"')
    item = await call(api, "POST", "/downloads", 201, json={"url": evil})
    done = await until(api, item["id"], status_is("completed"))
    assert done["filename"] == "evil.sh"
    assert (svc.dest / "evil.sh").read_bytes() == content_for("x.bin", 50)
    encoded = f"{server.base}/data/..%2F..%2Fup.bin?size=5"
    item = await call(api, "POST", "/downloads", 201, json={"url": encoded})
    done = await until(api, item["id"], status_is("completed", "failed"))
    assert "/" not in done["filename"]
    assert ".." not in done["filename"].split(".")[0:1]
    assert not (svc.dest.parent / "up.bin").exists()
    assert not (svc.dest.parent.parent / "up.bin").exists()


async def test_restart_keeps_finished_and_resumes_unfinished(
    tmp_path: Path, server: LocalServer
) -> None:
    """After close and a new start on the same folder, finished items stay and the rest resume."""
    folder = tmp_path / "dl"
    slow = server.url("/data/big.bin", size=3_000_000, rate=3_000_000)
    async with await nbdl.serve(folder, token="t" * 16) as svc:
        headers = {"Authorization": f"Bearer {svc.token}"}
        async with aiohttp.ClientSession(svc.base_url, headers=headers) as api:
            fast = await call(api, "POST", "/downloads", 201, json={"url": server.url("/data/f")})
            big = await call(api, "POST", "/downloads", 201, json={"url": slow})
            await until(api, fast["id"], status_is("completed"))
            await until(api, big["id"], lambda i: i["bytes_downloaded"] > 500_000)
    database = folder / ".nbdl" / "service.sqlite3"
    with sqlite3.connect(database) as conn:
        rows = dict(conn.execute("SELECT id, status FROM items").fetchall())
    assert rows == {1: "completed", 2: "queued"}
    async with await nbdl.serve(folder, token="t" * 16) as svc:
        headers = {"Authorization": f"Bearer {svc.token}"}
        async with aiohttp.ClientSession(svc.base_url, headers=headers) as api:
            await until(api, big["id"], status_is("completed"))
            assert (await call(api, "GET", f"/downloads/{fast['id']}"))["status"] == "completed"
    assert (folder / "big.bin").read_bytes() == content_for("big.bin", 3_000_000)
    last = server.requests_for("/data/big.bin")[-1]
    assert last.headers.get("Range", "").startswith("bytes=")
    assert len(server.requests_for("/data/f")) == 1  # the finished one was not fetched again


async def test_openapi_document_lists_every_route(svc: Server, api: aiohttp.ClientSession) -> None:
    """The OpenAPI 3.1 document describes each route the server answers."""
    doc = await call(api, "GET", "/openapi.json")
    assert doc["openapi"] == "3.1.0"
    operations = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    from nbdl.service._openapi import ROUTES

    assert operations == {(route.method, route.path) for route in ROUTES}
    assert doc["paths"]["/api/v1/downloads"]["post"]["responses"]["422"]
