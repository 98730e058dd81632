"""Mirrors: the next URL of a file is tried when the one before fails in a way it may not."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import nbdl
from nbdl.testing import LocalServer, content_for

from .conftest import FAST_RETRY, leftovers

SIZE = 600_000  # above the resume threshold: a .part file and a record


async def _one(config: nbdl.FileConfig, dest: Path, **options: object) -> nbdl.DownloadInfo:
    options.setdefault("retries", FAST_RETRY)
    results = await nbdl.fetch([config], dest, tracker="none", **options)  # type: ignore[arg-type]
    return results[0]


@pytest.mark.parametrize("fault", ["404", "503", "reset"])
async def test_mirror_serves_after_a_failure_worth_trying_elsewhere(
    server: LocalServer, dest: Path, fault: str
) -> None:
    """404, 5xx (after its retries) or a broken connection: the mirror serves the file."""
    fails = ",".join([fault] * 4)  # the first URL keeps failing through every retry
    primary = server.url("/data/m.bin", size=SIZE, fail=fails, etag="none")
    mirror = server.url("/data/m.bin", size=SIZE, mirror="1")
    info = await _one(nbdl.FileConfig(primary, mirrors=[mirror]), dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED, info.error
    assert info.served_by is not None
    assert "mirror=" in info.served_by
    assert (dest / "m.bin").read_bytes() == content_for("m.bin", SIZE)
    assert [r.query.get("mirror") for r in server.requests_for("/data/m.bin")][-1] == "1"
    assert leftovers(dest) == ["m.bin"]


async def test_a_client_error_is_not_sent_to_a_mirror(server: LocalServer, dest: Path) -> None:
    """403 says nothing about other servers: FAILED at once, the mirror never asked."""
    primary = server.url("/data/f.bin", size=1000, fail="403")
    mirror = server.url("/data/f.bin", size=1000, mirror="1")
    info = await _one(nbdl.FileConfig(primary, mirrors=[mirror]), dest)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.http_status == 403
    assert all("mirror" not in r.query for r in server.requests_for("/data/f.bin"))


async def test_every_mirror_failing_reports_the_last_error(server: LocalServer, dest: Path) -> None:
    """With every URL failing, the item fails with the last one's error after trying each."""
    urls = [server.url("/data/x.bin", size=1000, fail="404", mirror=str(i)) for i in range(3)]
    info = await _one(nbdl.FileConfig(urls[0], mirrors=urls[1:]), dest)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error == "HTTP 404 Not Found"
    assert len(server.requests_for("/data/x.bin")) == 3


async def test_checksum_must_match_whatever_mirror_served(server: LocalServer, dest: Path) -> None:
    """A mirror serving other bytes fails the checksum: nothing at the final path."""
    right = hashlib.sha256(content_for("c.bin", 2000)).hexdigest()
    primary = server.url("/data/c.bin", size=2000, fail="404")
    wrong_mirror = server.url("/data/c.bin", size=1999)  # same name, other bytes
    config = nbdl.FileConfig(primary, mirrors=[wrong_mirror], checksum=f"sha256:{right}")
    info = await _one(config, dest)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error_kind is nbdl.ErrorKind.CHECKSUM
    assert not (dest / "c.bin").exists()


async def test_same_file_on_another_server_resumes_by_strong_etag(
    server: LocalServer, dest: Path
) -> None:
    """Two servers with the same strong ETag: the mirror continues the partial file (Range)."""
    with LocalServer() as other:
        primary = server.url("/data/s.bin", size=SIZE, fail="reset", at="300000")
        mirror = other.url("/data/s.bin", size=SIZE)
        info = await _one(nbdl.FileConfig(primary, mirrors=[mirror]), dest, retries=0)
        (request,) = other.requests_for("/data/s.bin")
    assert info.status is nbdl.DownloadStatus.COMPLETED, info.error
    assert request.headers["Range"] == "bytes=300000-"
    assert info.resumed_from == 300_000
    assert (dest / "s.bin").read_bytes() == content_for("s.bin", SIZE)


async def test_bytes_of_two_servers_are_never_stitched_on_a_date(
    server: LocalServer, dest: Path
) -> None:
    """Without a strong ETag the mirror starts from byte zero: no Range, file exact."""
    with LocalServer() as other:
        primary = server.url("/data/d.bin", size=SIZE, fail="reset", at="300000", etag="weak")
        mirror = other.url("/data/d.bin", size=SIZE, etag="weak")
        info = await _one(nbdl.FileConfig(primary, mirrors=[mirror]), dest, retries=0)
        (request,) = other.requests_for("/data/d.bin")
    assert info.status is nbdl.DownloadStatus.COMPLETED, info.error
    assert "Range" not in request.headers
    assert (dest / "d.bin").read_bytes() == content_for("d.bin", SIZE)


def test_bad_mirrors_are_refused_before_any_request() -> None:
    """Mirrors must be distinct absolute http(s) URLs, given as a list."""
    for bad in (["ftp://x/y"], "http://x/y", ["http://a/f", "http://a/f"], ["http://h/f.bin"]):
        with pytest.raises(ValueError, match=r"mirror|URL"):
            nbdl.FileConfig("http://h/f.bin", mirrors=bad)  # type: ignore[arg-type]
