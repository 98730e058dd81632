"""The service's live event stream, and a kill -9 of ``nbdl serve`` in the middle of a download."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import nbdl
from nbdl.service import Server, _events
from nbdl.testing import LocalServer, content_for

from .conftest import FAST_RETRY


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Server]:
    server = await nbdl.serve(tmp_path / "dl", retries=FAST_RETRY)
    yield server
    await server.close()


Event = tuple[int, str, dict[str, Any]]


async def read_events(resp: aiohttp.ClientResponse, until: Any) -> list[Event]:
    """Parse SSE frames until ``until(events)`` is true."""
    events: list[Event] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(20):
        while not until(events):
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line == "":
                if "event" in fields:
                    events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return events


def stream(
    api: aiohttp.ClientSession, last: int | None = None
) -> aiohttp.client._RequestContextManager:
    headers = {} if last is None else {"Last-Event-ID": str(last)}
    return api.get("/api/v1/events", headers=headers)


def completed(item_id: int) -> Any:
    return lambda events: any(
        kind == "item" and data["id"] == item_id and data["status"] == "completed"
        for _, kind, data in events
    )


async def test_events_are_numbered_coalesced_and_resumable(
    svc: Server, server: LocalServer
) -> None:
    """A stream starts with a snapshot, then numbered, coalesced item events; Last-Event-ID resumes.

    Reconnecting with Last-Event-ID continues right after that id.
    """
    headers = {"Authorization": f"Bearer {svc.token}"}
    async with aiohttp.ClientSession(svc.base_url, headers=headers) as api:
        async with stream(api) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            first = await read_events(resp, lambda e: len(e) >= 1)
            assert first[0][1] == "snapshot"
            url = server.url("/data/live.bin", size=1_500_000, rate=1_000_000)
            async with api.post("/api/v1/downloads", json={"url": url}) as added:
                item_id = (await added.json())["id"]
            started = time.monotonic()
            events = await read_events(resp, completed(item_id))
            took = time.monotonic() - started
        ids = [seq for seq, _, _ in events]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
        mine = [
            data
            for _, kind, data in events
            if kind in ("item", "progress") and data["id"] == item_id
        ]
        assert [d["status"] for d in mine if "status" in d][-1] == "completed"
        assert all(
            set(d)
            < {
                "id",
                "bytes_downloaded",
                "speed",
                "eta_seconds",
                "total_bytes",
                "attempts",
                "note",
                "http_status",
                "started_at",
                "filename",
            }
            for d in mine
            if "status" not in d
        )  # progress: only what changed
        # Progress came in many chunks; the stream carried at most ~4 updates a second.
        assert len(mine) <= took / _events.INTERVAL + 3
        assert any(0 < d.get("bytes_downloaded", 0) < 1_500_000 for d in mine)
        assert any(d.get("speed") for d in mine)
        assert any(kind == "stats" for _, kind, _ in events)
        middle = ids[len(ids) // 2]
        async with stream(api, last=middle) as resp:
            again = await read_events(resp, lambda e: len(e) >= len(ids) - ids.index(middle) - 1)
        assert [seq for seq, _, _ in again][: len(ids) - ids.index(middle) - 1] == [
            seq for seq in ids if seq > middle
        ]
        async with api.delete(f"/api/v1/downloads/{item_id}") as gone:
            assert gone.status == 204
        async with stream(api, last=ids[-1]) as resp:
            rest = await read_events(resp, lambda e: any(k == "removed" for _, k, _ in e))
        assert ("removed", {"id": item_id}) in [(k, d) for _, k, d in rest]


async def test_a_client_too_far_behind_gets_a_snapshot(
    tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last-Event-ID older than the ring buffer yields a snapshot instead of a gap."""
    monkeypatch.setattr(_events, "RING_SIZE", 3)
    async with await nbdl.serve(tmp_path / "dl", run_downloads=False) as svc:
        headers = {"Authorization": f"Bearer {svc.token}"}
        async with aiohttp.ClientSession(svc.base_url, headers=headers) as api:
            items = [{"url": server.url(f"/data/r{i}", size=1)} for i in range(8)]
            async with api.post("/api/v1/downloads/batch", json={"items": items}) as resp:
                assert resp.status == 201
            await asyncio.sleep(3 * _events.INTERVAL)
            async with stream(api, last=1) as resp:
                events = await read_events(resp, lambda e: len(e) >= 1)
            assert events[0][1] == "snapshot"
            assert events[0][2]["stats"]["queued"] == 8
            assert events[0][0] >= 9
            async with stream(api, last=10**9) as resp:
                # A client from the future (an old server's ids) also starts over.
                events = await read_events(resp, lambda e: len(e) >= 1)
            assert events[0][1] == "snapshot"


def start_service(folder: Path, token: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "nbdl", "serve", "--port", "0", "-o", str(folder), "-j", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NBDL_TOKEN": token},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        if found:
            assert found[2] == token
            return process, found[1]
        assert line, "nbdl serve exited before printing its URL"
    raise AssertionError("nbdl serve printed no URL")


async def test_kill_9_mid_download_then_restart_resumes_with_range(
    tmp_path: Path, server: LocalServer
) -> None:
    """A kill -9 of 'nbdl serve' mid-download; the next start resumes with Range, byte-exact."""
    folder, token = tmp_path / "dl", "k" * 24
    size = 4_000_000
    url = server.url("/data/killed.bin", size=size, rate=2_000_000)
    process, base = start_service(folder, token)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(base, headers=headers) as api:
            async with api.post("/api/v1/downloads", json={"url": url}) as resp:
                assert resp.status == 201
                item_id = (await resp.json())["id"]
            part = folder / "killed.bin.part"
            deadline = time.monotonic() + 20
            while not (part.exists() and part.stat().st_size > 1_000_000):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    kept = part.stat().st_size
    process, base = start_service(folder, token)
    try:
        async with aiohttp.ClientSession(base, headers=headers) as api:
            deadline = time.monotonic() + 30
            while True:
                async with api.get(f"/api/v1/downloads/{item_id}") as resp:
                    item = await resp.json()
                if item["status"] == "completed":
                    break
                assert item["status"] not in ("failed", "cancelled"), item
                assert time.monotonic() < deadline, item
                await asyncio.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    assert (folder / "killed.bin").read_bytes() == content_for("killed.bin", size)
    resumed = server.requests_for("/data/killed.bin")[-1].headers.get("Range", "")
    start = int(resumed.removeprefix("bytes=").split("-")[0])
    assert 0 < start <= kept


def test_serve_on_a_taken_port_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'nbdl serve' on a port in use says so in one line and exits 2."""
    from nbdl._cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "-o", str(tmp_path / "dl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nbdl: error: cannot serve on 127.0.0.1:{port}")
    assert len(err.strip().splitlines()) == 1


def test_serve_on_a_served_folder_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second 'nbdl serve' on a folder another process serves is refused, exit 2."""
    from nbdl._cli import main

    process, _ = start_service(tmp_path / "dl", "f" * 16)
    try:
        assert main(["serve", "--port", "0", "-o", str(tmp_path / "dl")]) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    assert "already serving" in capsys.readouterr().err
