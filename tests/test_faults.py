import time
from pathlib import Path

import pytest

import nbdl
from nbdl.testing import LocalServer, content_for

from .conftest import FAST_RETRY, leftovers

SIZE = 2_000_000


async def _fetch_one(url: str, dest: Path, **kwargs: object) -> nbdl.DownloadInfo:
    kwargs.setdefault("retries", FAST_RETRY)
    results = await nbdl.fetch([url], dest, tracker="none", **kwargs)  # type: ignore[arg-type]
    return results[0]


@pytest.mark.parametrize("fault", ["truncate", "reset"])
async def test_broken_body_resumes_with_range(server: LocalServer, dest: Path, fault: str) -> None:
    """A body cut short (closed or reset) is retried with Range + If-Range from where it broke."""
    url = server.url("/data/b.bin", size=SIZE, fail=fault)
    info = await _fetch_one(url, dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.attempts == 2
    assert info.path.read_bytes() == content_for("b.bin", SIZE)
    first, second = server.requests_for("/data/b.bin")
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={SIZE // 2}-"
    assert second.headers["If-Range"].startswith('"')
    assert not (dest / "b.bin.part").exists()
    assert leftovers(dest) == ["b.bin"]


async def test_broken_body_without_retries_fails_cleanly(server: LocalServer, dest: Path) -> None:
    """With retries=0 a truncated body fails (kind connection) and nothing is at the final path."""
    info = await _fetch_one(server.url("/data/t.bin", size=SIZE, fail="truncate"), dest, retries=0)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error_kind is nbdl.ErrorKind.CONNECTION
    assert not (dest / "t.bin").exists()


async def test_503_with_retry_after_is_honoured(server: LocalServer, dest: Path) -> None:
    """A 503 with Retry-After waits that long, then succeeds."""
    url = server.url("/data/r.bin", fail="503", retry_after=1)
    started = time.monotonic()
    info = await _fetch_one(url, dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    first, second = server.requests_for("/data/r.bin")
    assert second.at - first.at >= 0.95
    assert time.monotonic() - started < 5
    assert info.note == "completed on attempt 2"


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried(server: LocalServer, dest: Path, status: int) -> None:
    """408, 425, 429 and 5xx are retried."""
    info = await _fetch_one(server.url("/data/s.bin", fail=f"{status},{status}"), dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert len(server.requests_for("/data/s.bin")) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_other_4xx_fail_after_one_request(
    server: LocalServer, dest: Path, status: int
) -> None:
    """Other 4xx fail at once, with exactly one request and a one-line message."""
    info = await _fetch_one(server.url("/data/f.bin", fail=str(status)), dest)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error_kind is nbdl.ErrorKind.HTTP
    assert info.http_status == status
    assert (info.error or "").startswith(f"HTTP {status} ")
    assert len(server.requests_for("/data/f.bin")) == 1
    assert not list(dest.glob("f.bin*"))


async def test_retries_are_bounded(server: LocalServer, dest: Path) -> None:
    """After `retries` extra attempts the download fails with the last error."""
    info = await _fetch_one(server.url("/data/x.bin", fail="500,500,500,500,500"), dest)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.attempts == 4
    assert info.error == "HTTP 500 Internal Server Error"
    assert len(server.requests_for("/data/x.bin")) == 4


async def test_range_ignored_restarts_from_zero(server: LocalServer, dest: Path) -> None:
    """A server that advertises ranges but answers 200 to a Range request gives a correct file."""
    info = await _fetch_one(server.url("/data/n.bin", size=SIZE, fail="reset,norange"), dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.path.stat().st_size == SIZE
    assert info.path.read_bytes() == content_for("n.bin", SIZE)
    assert server.requests_for("/data/n.bin")[1].headers["Range"] == f"bytes={SIZE // 2}-"


async def test_partial_file_with_range_ignoring_server(server: LocalServer, dest: Path) -> None:
    """A leftover partial never gets a whole body appended (the parfive 18 MB defect)."""
    url = server.url("/data/p.bin", size=SIZE, fail="reset,norange,norange,norange")
    await _fetch_one(url, dest, retries=0)
    assert (dest / "p.bin.part").stat().st_size == SIZE // 2
    info = await _fetch_one(url, dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.path.read_bytes() == content_for("p.bin", SIZE)


async def test_wrong_content_range_restarts_from_zero(server: LocalServer, dest: Path) -> None:
    """A 206 whose Content-Range does not start at our offset is not appended."""
    info = await _fetch_one(server.url("/data/w.bin", size=SIZE, fail="reset,badrange"), dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.path.read_bytes() == content_for("w.bin", SIZE)
    third = server.requests_for("/data/w.bin")[2]
    assert "Range" not in third.headers


async def test_416_restarts_from_zero(server: LocalServer, dest: Path) -> None:
    """416 to a resume request discards the partial file and starts over."""
    url = server.url("/data/q.bin", size=SIZE, fail="reset,416")
    info = await _fetch_one(url, dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.path.read_bytes() == content_for("q.bin", SIZE)


async def test_changed_resource_is_not_spliced(server: LocalServer, dest: Path) -> None:
    """When the ETag changes between attempts, If-Range makes the new version start from zero."""
    info = await _fetch_one(server.url("/data/e.bin", size=SIZE, fail="reset", etag="change"), dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.path.read_bytes() == content_for("e.bin", SIZE, version=1)
    _, second = server.requests_for("/data/e.bin")
    assert second.headers["If-Range"].endswith('-0"')


async def test_no_validator_means_no_resume(server: LocalServer, dest: Path) -> None:
    """Without ETag or Last-Modified a retry starts from zero rather than risk a splice."""
    info = await _fetch_one(server.url("/data/v.bin", size=SIZE, fail="reset", etag="none"), dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert "Range" not in server.requests_for("/data/v.bin")[1].headers
    assert info.path.read_bytes() == content_for("v.bin", SIZE)


async def test_body_longer_than_announced_fails_the_attempt(
    server: LocalServer, dest: Path
) -> None:
    """A 206 body running past its Content-Range fails that attempt and never lands in the file."""
    url = server.url("/data/l.bin", size=SIZE, fail="reset,longer")
    info = await _fetch_one(url, dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.attempts == 3
    assert info.path.read_bytes() == content_for("l.bin", SIZE)


async def test_bytes_past_content_length_do_not_corrupt(server: LocalServer, dest: Path) -> None:
    """Garbage past Content-Length on a reused connection is retried, not saved."""
    urls = [server.url("/data/g1.bin", size=100_000, fail="extra"), server.url("/data/g2.bin")]
    results = await nbdl.fetch(urls, dest, max_workers=1, tracker="none", retries=FAST_RETRY)
    assert results.ok
    assert (dest / "g1.bin").read_bytes() == content_for("g1.bin", 100_000)
    assert (dest / "g2.bin").read_bytes() == content_for("g2.bin", 1024)


async def test_stall_is_abandoned_and_resumed(server: LocalServer, dest: Path) -> None:
    """A stalled body is abandoned after read_timeout and resumed by the next attempt."""
    url = server.url("/data/st.bin", size=SIZE, fail="stall", stall=30)
    started = time.monotonic()
    info = await _fetch_one(url, dest, read_timeout=0.3)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert time.monotonic() - started < 5
    assert server.requests_for("/data/st.bin")[1].headers["Range"] == f"bytes={SIZE // 2}-"


async def test_stall_without_retries_is_a_timeout(server: LocalServer, dest: Path) -> None:
    """A stall with no retries left fails with kind timeout."""
    url = server.url("/data/st2.bin", size=SIZE, fail="stall", stall=30)
    info = await _fetch_one(url, dest, read_timeout=0.3, retries=0)
    assert info.error_kind is nbdl.ErrorKind.TIMEOUT
    assert "timed out" in (info.error or "")


async def test_total_timeout(server: LocalServer, dest: Path) -> None:
    """The total timeout bounds a whole download; the partial file is kept for a resume."""
    url = server.url("/data/slow.bin", size=SIZE, rate=1_000_000)
    info = await _fetch_one(url, dest, timeout=0.5)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error_kind is nbdl.ErrorKind.TIMEOUT
    assert "timeout=0.5" in (info.error or "")
    assert not (dest / "slow.bin").exists()
    assert (dest / "slow.bin.part").exists()


async def test_redirects_are_followed(server: LocalServer, dest: Path) -> None:
    """A chain of redirects is followed to the file."""
    url = server.url("/redirect/3", to="/data/target.bin?size=5000")
    info = await _fetch_one(url, dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.path.read_bytes() == content_for("target.bin", 5000)


async def test_redirect_loop_fails_saying_redirect(server: LocalServer, dest: Path) -> None:
    """A redirect loop fails (not retried) with an error that says redirect."""
    info = await _fetch_one(server.url("/loop"), dest)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error_kind is nbdl.ErrorKind.HTTP
    assert "redirect" in (info.error or "")
    assert len(server.requests_for("/loop")) == 10  # max_redirects, and no retry


async def test_connection_refused_is_a_connection_error(dest: Path) -> None:
    """A server that is not there fails with kind connection after the retries."""
    info = await _fetch_one("http://127.0.0.1:9/nothing.bin", dest)
    assert info.error_kind is nbdl.ErrorKind.CONNECTION
    assert info.attempts == 4
    assert "cannot connect" in (info.error or "")
