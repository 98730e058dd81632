import asyncio
import hashlib
from pathlib import Path

import aiohttp
import pytest

import nbdl
from nbdl.testing import LocalServer, content_for

from .conftest import FAST_RETRY


async def test_downloads_files_with_exact_bytes(server: LocalServer, dest: Path) -> None:
    """Files land at their final paths with the resource's exact bytes, and dest is created."""
    urls = [server.url(f"/data/f{i}.bin", size=300_000 + i) for i in range(4)]
    results = await nbdl.fetch(urls, dest, tracker="none")
    assert results.ok
    for i, info in enumerate(results):
        assert info.path == dest / f"f{i}.bin"
        assert info.path.read_bytes() == content_for(f"f{i}.bin", 300_000 + i)
        assert info.bytes_downloaded == info.total_bytes == 300_000 + i
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == [f"f{i}.bin" for i in range(4)]


async def test_requests_ask_for_identity_encoding(server: LocalServer, dest: Path) -> None:
    """Requests ask for the exact bytes (Accept-Encoding: identity) and carry headers."""
    cfg = nbdl.FileConfig(server.url("/data/h.bin"), headers={"X-File": "1"})
    await nbdl.fetch([cfg], dest, headers={"Authorization": "Bearer t"}, tracker="none")
    (request,) = server.requests_for("/data/h.bin")
    assert request.headers["Accept-Encoding"] == "identity"
    assert request.headers["X-File"] == "1"
    assert request.headers["Authorization"] == "Bearer t"


async def test_compressed_answer_is_saved_decoded(server: LocalServer, dest: Path) -> None:
    """A server that compresses anyway still yields the resource's exact bytes."""
    results = await nbdl.fetch([server.url("/gzip/g.bin", size=50_000)], dest, tracker="none")
    assert results.ok
    assert (dest / "g.bin").read_bytes() == content_for("g.bin", 50_000)


@pytest.mark.parametrize("bad", ["htp://x", "not a url", ""])
async def test_bad_url_raises_before_any_request(server: LocalServer, dest: Path, bad: str) -> None:
    """An invalid URL raises ValueError naming it, and nothing is requested."""
    with pytest.raises(ValueError, match=r"item 1") as caught:
        await nbdl.fetch([server.url("/data/ok.bin"), bad], dest)
    assert repr(bad) in str(caught.value)
    assert server.requests == []
    assert not dest.exists()


async def test_clashing_paths_raise_before_any_request(server: LocalServer, dest: Path) -> None:
    """Two different URLs that would be saved under one name are refused up front."""
    a = server.url("/data/same.bin", size=10)
    b = server.url("/data/same.bin", size=20)
    with pytest.raises(ValueError, match="both be saved"):
        await nbdl.fetch([a, b], dest)
    assert server.requests == []


async def test_same_url_twice_is_downloaded_once(server: LocalServer, dest: Path) -> None:
    """A URL listed twice is fetched once and reported for both positions."""
    url = server.url("/data/dup.bin")
    results = await nbdl.fetch([url, url], dest, tracker="none")
    assert len(results) == 2
    assert results[0] == results[1]
    assert len(server.requests_for("/data/dup.bin")) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_workers": 0}, "max_workers"),
        ({"max_workers": 2.5}, "max_workers"),
        ({"retries": -1}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"read_timeout": float("nan")}, "read_timeout"),
        ({"overwrite": "yes"}, "overwrite"),
        ({"tracker": "fancy"}, "tracker"),
        ({"tracker": object()}, "tracker"),
        ({"headers": {"A": 1}}, "header"),
        ({"segments": 0}, "segments"),
        ({"max_per_host": True}, "max_per_host"),
    ],
)
async def test_bad_settings_raise(
    server: LocalServer, dest: Path, kwargs: dict[str, object], message: str
) -> None:
    """Every invalid setting is a ValueError naming it, before any request."""
    with pytest.raises(ValueError, match=message):
        await nbdl.fetch([server.url("/data/a.bin")], dest, **kwargs)  # type: ignore[arg-type]
    assert server.requests == []


async def test_single_string_is_refused(server: LocalServer, dest: Path) -> None:
    """A bare URL string (not a list) is a clear error, not 40 one-letter downloads."""
    with pytest.raises(ValueError, match="wrap a single one in a list"):
        await nbdl.fetch(server.url("/data/a.bin"), dest)  # type: ignore[arg-type]


async def test_priority_order_with_one_worker(server: LocalServer, dest: Path) -> None:
    """With max_workers=1, requests follow priority (higher first), input order among equals."""
    specs = [("a", 1), ("b", 5), ("c", 1), ("d", 3), ("e", 5)]
    configs = [nbdl.FileConfig(server.url(f"/data/{n}.bin"), priority=p) for n, p in specs]
    results = await nbdl.fetch(configs, dest, max_workers=1, tracker="none")
    assert [r.path.name for r in results] == ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin"]
    assert [r.path for r in server.requests] == [
        "/data/b.bin",
        "/data/e.bin",
        "/data/d.bin",
        "/data/a.bin",
        "/data/c.bin",
    ]


async def test_concurrency_is_bounded_by_max_workers(server: LocalServer, dest: Path) -> None:
    """No more than max_workers downloads run at once, and that many do."""
    urls = [server.url(f"/data/c{i}.bin", size=1000, delay=0.15) for i in range(8)]
    results = await nbdl.fetch(urls, dest, max_workers=3, tracker="none")
    assert results.ok
    assert server.max_in_flight == 3


async def test_results_summary_and_errors(server: LocalServer, dest: Path) -> None:
    """Results keep input order, split completed/failed, and raise an ExceptionGroup on demand."""
    urls = [server.url("/data/ok.bin"), server.url("/data/gone.bin", fail="404")]
    results = await nbdl.fetch(urls, dest, tracker="none")
    assert [r.status for r in results] == [
        nbdl.DownloadStatus.COMPLETED,
        nbdl.DownloadStatus.FAILED,
    ]
    assert results.completed == [results[0]]
    assert results.failed == [results[1]]
    assert "2 files: 1 completed, 1 failed" in repr(results)
    assert "gone.bin: HTTP 404 Not Found" in repr(results)
    assert "fail=***" in repr(results[1])
    with pytest.raises(ExceptionGroup) as caught:
        results.raise_for_errors()
    (error,) = caught.value.exceptions
    assert isinstance(error, nbdl.HTTPStatusError)
    assert error.status == 404
    html = results._repr_html_()
    assert "gone.bin" in html
    assert "HTTP 404 Not Found" in html


async def test_rerun_makes_zero_requests(server: LocalServer, dest: Path) -> None:
    """Running the same fetch again requests nothing for files already complete."""
    urls = [server.url(f"/data/r{i}.bin", size=5000) for i in range(3)]
    urls.append(server.url("/data/x", cd="attachment; filename*=UTF-8''named%20by%20server.csv"))
    first = await nbdl.fetch(urls, dest, tracker="none")
    assert first.ok
    assert first[3].path.name == "named by server.csv"
    server.reset_stats()
    second = await nbdl.fetch(urls, dest, tracker="none")
    assert second.ok
    assert server.requests == []
    assert all(info.from_cache for info in second)
    assert second[3].path == dest / "named by server.csv"


async def test_rerun_with_checksum_verifies_locally(server: LocalServer, dest: Path) -> None:
    """With a checksum, a complete file is verified locally; a corrupted one is fetched again."""
    body = content_for("v.bin", 4000)
    cfg = nbdl.FileConfig(
        server.url("/data/v.bin", size=4000), checksum="sha256:" + hashlib.sha256(body).hexdigest()
    )
    await nbdl.fetch([cfg], dest, tracker="none")
    server.reset_stats()
    again = await nbdl.fetch([cfg], dest, tracker="none")
    assert again[0].from_cache
    assert server.requests == []
    (dest / "v.bin").write_bytes(b"corrupted")
    repaired = await nbdl.fetch([cfg], dest, tracker="none")
    assert repaired.ok
    assert not repaired[0].from_cache
    assert (dest / "v.bin").read_bytes() == body
    assert len(server.requests) == 1


async def test_overwrite_downloads_again(server: LocalServer, dest: Path) -> None:
    """overwrite=True downloads even though the final file exists."""
    url = server.url("/data/o.bin")
    await nbdl.fetch([url], dest, tracker="none")
    (dest / "o.bin").write_bytes(b"old")
    results = await nbdl.fetch([url], dest, overwrite=True, tracker="none")
    assert (dest / "o.bin").read_bytes() == content_for("o.bin", 1024)
    assert len(server.requests) == 2
    assert not results[0].from_cache


async def test_checksum_match_and_mismatch(server: LocalServer, dest: Path) -> None:
    """A matching checksum completes; a mismatch fails with kind checksum and leaves no file."""
    body = content_for("k.bin", 700_000)
    good = nbdl.FileConfig(
        server.url("/data/k.bin", size=700_000), checksum="md5:" + hashlib.md5(body).hexdigest()
    )
    bad = nbdl.FileConfig(server.url("/data/k2.bin", size=700_000), checksum="sha1:" + "0" * 40)
    results = await nbdl.fetch([good, bad], dest, tracker="none", retries=FAST_RETRY)
    assert results[0].status is nbdl.DownloadStatus.COMPLETED
    assert results[1].status is nbdl.DownloadStatus.FAILED
    assert results[1].error_kind is nbdl.ErrorKind.CHECKSUM
    assert "sha1 mismatch" in (results[1].error or "")
    assert not (dest / "k2.bin").exists()
    assert not (dest / "k2.bin.part").exists()
    assert len(server.requests_for("/data/k2.bin")) == 1


async def test_custom_tracker_sees_the_life_cycle(server: LocalServer, dest: Path) -> None:
    """A tracker object gets register, start, patches in state-machine order, and close."""

    class Recorder(nbdl.DownloadTracker):
        def __init__(self) -> None:
            super().__init__()
            self.events: list[str] = []

        def start(self) -> None:
            self.events.append("start")

        def close(self) -> None:
            self.events.append("close")

        def patch_download(self, url: str, patch: nbdl.PatchDownloadInfo) -> None:
            super().patch_download(url, patch)
            if patch.status is not None and patch.status.value not in self.events:
                self.events.append(patch.status.value)

    recorder = Recorder()
    await nbdl.fetch([server.url("/data/t.bin", size=2_000_000)], dest, tracker=recorder)
    assert recorder.events == ["start", "pending", "in_progress", "completed", "close"]
    assert recorder.downloads()[0].bytes_downloaded == 2_000_000


async def test_a_body_read_at_once_is_reported_once(server: LocalServer, dest: Path) -> None:
    """A small body takes two reports (pending, completed), the last with status code and size."""
    patches: list[nbdl.PatchDownloadInfo] = []

    class Recorder(nbdl.DownloadTracker):
        def patch_download(self, url: str, patch: nbdl.PatchDownloadInfo) -> None:
            super().patch_download(url, patch)
            patches.append(patch)

    recorder = Recorder()
    await nbdl.fetch([server.url("/data/one.bin", size=3000)], dest, tracker=recorder)
    assert [p.status for p in patches] == [
        nbdl.DownloadStatus.PENDING,
        nbdl.DownloadStatus.COMPLETED,
    ]
    info = recorder.downloads()[0]
    assert (info.http_status, info.total_bytes, info.resumed_from) == (200, 3000, 0)


async def test_manager_with_injected_client(server: LocalServer, dest: Path) -> None:
    """DownloadManager uses an injected session and leaves it open for its owner."""
    async with aiohttp.ClientSession() as session:
        async with nbdl.DownloadManager(dest=dest, client=session, max_workers=2) as manager:
            info = manager.add_to_queue(server.url("/data/m.bin"))
            assert info.status is nbdl.DownloadStatus.QUEUED
            results = await manager.run()
        assert results.ok
        assert not session.closed


async def test_large_reads_by_default() -> None:
    """The default read size is large (>= 256 KiB), never the seed's 1 KiB."""
    assert nbdl.DownloadWorker().chunk_size >= 256 * 1024


async def test_cancel_reraises_and_marks_cancelled(server: LocalServer, dest: Path) -> None:
    """Cancelling fetch cancels every download, re-raises, and leaves no final files."""
    tracker = nbdl.DownloadTracker()
    urls = [server.url(f"/data/slow{i}.bin", size=4_000_000, rate=2_000_000) for i in range(3)]
    task = asyncio.create_task(nbdl.fetch(urls, dest, tracker=tracker, max_workers=2))
    await asyncio.sleep(0.6)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert {i.status for i in tracker.downloads()} == {nbdl.DownloadStatus.CANCELLED}
    assert not any((dest / f"slow{i}.bin").exists() for i in range(3))
    assert (dest / "slow0.bin.part").stat().st_size > 0


async def test_two_batches_never_write_one_file(server: LocalServer, dest: Path) -> None:
    """A second batch for a file that a running batch writes is refused; the first completes."""
    url = server.url("/data/shared.bin", size=2_000_000, rate=4_000_000)
    first = asyncio.create_task(nbdl.fetch([url], dest, tracker="none"))
    for _ in range(500):  # the server thread has no event to await: poll what it recorded
        if server.requests_for("/data/shared.bin"):
            break
        await asyncio.sleep(0.01)
    with pytest.raises(nbdl.BatchConflictError, match=r"shared\.bin is being downloaded"):
        await nbdl.fetch([url, server.url("/data/other.bin")], dest, tracker="none")
    assert (await first).ok
    assert server.requests_for("/data/other.bin") == []
    again = await nbdl.fetch([url], dest, tracker="none")
    assert again[0].from_cache


@pytest.mark.parametrize("option", [{"segments": 0}, {"max_per_host": 0}, {"retries": -1}])
async def test_start_and_fetch_sync_validate_like_fetch(
    server: LocalServer, dest: Path, option: dict[str, object]
) -> None:
    """nbdl.start and nbdl.fetch_sync reject the same bad options as fetch, before any request."""
    url = server.url("/data/a.bin")
    with pytest.raises(ValueError, match=next(iter(option))):
        nbdl.fetch_sync([url], dest, tracker="none", **option)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=next(iter(option))):
        nbdl.start([url], dest, tracker="none", **option)  # type: ignore[arg-type]
    assert server.requests == []
