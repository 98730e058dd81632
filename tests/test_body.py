"""Bodies are read in the chunks the connection delivered: no joins, no copies, few page faults."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from nbdl._body import Body
from nbdl.testing import LocalServer, content_for

PIECES = [b"a" * 70_000, b"b" * 5, b"c" * 200_000, b"d" * 1]


@pytest.fixture
async def chunked_url() -> AsyncIterator[str]:
    """A server whose answer is a chunked body written in four unequal pieces."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in PIECES:
            await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/chunked", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/chunked"
    finally:
        await runner.cleanup()


async def test_a_chunked_body_comes_whole_in_reads_no_larger_than_asked(chunked_url: str) -> None:
    """Reads of at most the limit add up to the body, across HTTP chunk boundaries, then end."""
    async with aiohttp.ClientSession() as session, session.get(chunked_url) as resp:
        body = Body(resp)
        parts = []
        while view := await body.read(4096):
            assert 0 < len(view) <= 4096
            parts.append(bytes(view))
        assert await body.read(4096) == b""
    assert b"".join(parts) == b"".join(PIECES)


async def test_reads_within_one_chunk_are_views_of_it(server: LocalServer) -> None:
    """Two small reads of one delivered chunk share its memory: nothing is copied or joined."""
    url = server.url("/data/v.bin", size=200_000)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body = Body(resp)
        first, second = await body.read(10), await body.read(10)
        assert first.obj is second.obj
        assert bytes(first) + bytes(second) == content_for("v.bin", 200_000)[:20]


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the page-fault behaviour pinned here is glibc's",
)
def test_a_large_download_does_not_fault_its_buffers_in_again_and_again(tmp_path: Path) -> None:
    """Downloading 64 MiB costs far fewer page faults than its pages (glibc's heap keeps them)."""
    size = 64 * 1024 * 1024
    script = """
import asyncio, json, resource, sys
import nbdl
async def main():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    results = await nbdl.fetch([sys.argv[1]], sys.argv[2], tracker="none")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps({"ok": results.ok, "faults": after - before}))
asyncio.run(main())
"""
    with LocalServer() as server:
        url = server.url("/data/big.bin", size=size)
        out = subprocess.run(
            [sys.executable, "-c", script, url, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ok"]
    # 16,384 pages of body; before the allocator was settled every 256 KiB read faulted its
    # 64 pages in afresh (about 16,000 faults here, 200,000 for 1 GiB).
    assert report["faults"] < size // 4096 // 4
