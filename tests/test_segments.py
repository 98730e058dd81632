"""Segmented downloads: correct files from ranged connections, or a clean fallback."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import signal
import sys
import time
from pathlib import Path

import pytest

import nbdl
from nbdl import _segments
from nbdl.testing import LocalServer, RequestRecord, content_for

from .conftest import FAST_RETRY

MIB = 1024 * 1024
SIZE = 8 * MIB  # four segments of 2 MiB
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _ranges(requests: list[RequestRecord]) -> list[tuple[int, int | None]]:
    spans = []
    for r in requests:
        match = _RANGE.fullmatch(r.headers.get("Range", ""))
        if match:
            spans.append((int(match[1]), int(match[2]) if match[2] else None))
    return spans


async def _one(url: str | nbdl.FileConfig, dest: Path, **kwargs: object) -> nbdl.DownloadInfo:
    results = await nbdl.fetch([url], dest, tracker="none", **kwargs)  # type: ignore[arg-type]
    return results[0]


async def test_segments_fetch_closed_ranges_and_assemble_the_file(
    server: LocalServer, dest: Path
) -> None:
    """segments=4: one plain GET feeds piece 0, closed Range requests the rest, 4 at a time."""
    info = await _one(server.url("/data/s.bin", size=SIZE), dest, segments=4)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (dest / "s.bin").read_bytes() == content_for("s.bin", SIZE)
    requests = server.requests_for("/data/s.bin")
    pieces = min(4 * _segments.PIECES_PER_CONNECTION, SIZE // _segments.MIN_SEGMENT_BYTES)
    assert len(requests) == pieces
    assert "Range" not in requests[0].headers
    step = SIZE // pieces
    assert sorted(_ranges(requests)) == [(i * step, (i + 1) * step - 1) for i in range(1, pieces)]
    assert server.max_in_flight <= 4
    assert all(
        r.headers["If-Range"] == requests[0].headers.get("If-Range", r.headers["If-Range"])
        for r in requests[1:]
    )
    assert not (dest / "s.bin.part").exists()
    assert not list((dest / ".nbdl").glob("*.json"))


async def test_small_files_are_not_split_automatically(server: LocalServer, dest: Path) -> None:
    """Below AUTO_MIN_BYTES a file is one request, even from a slow server allowing ranges."""
    size = _segments.AUTO_MIN_BYTES - 1
    info = await _one(server.url("/data/small.bin", size=size, rate=64 * MIB), dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert len(server.requests_for("/data/small.bin")) == 1


async def test_large_file_on_a_fast_link_is_one_request(server: LocalServer, dest: Path) -> None:
    """Automatic splitting on a fast link: the first answer streams every piece, no range asked."""
    size = 2 * _segments.AUTO_MIN_BYTES
    info = await _one(server.url("/data/auto.bin", size=size), dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    requests = server.requests_for("/data/auto.bin")
    assert [r.headers.get("Range") for r in requests] == [None]
    assert (dest / "auto.bin").read_bytes() == content_for("auto.bin", size)
    assert not (dest / "auto.bin.part").exists()


async def test_automatic_ramp_up_reaches_the_per_host_cap_behind_a_connection_cap(
    server: LocalServer, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each connection capped at 4 MiB/s: connections grow 1, 4, 8 (the cap), bytes exact."""
    monkeypatch.setattr(_segments, "AUTO_PROBE_SECONDS", 0.1)
    # Two seconds at the cap: the last connection opens long before the file runs out of
    # pieces, even on a busy machine (at 32 MiB one CI run saw at most 7 at once).
    size = 64 * MIB
    url = server.url("/data/capped.bin", size=size, rate=4 * MIB)
    info = await _one(url, dest, max_per_host=8)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (dest / "capped.bin").read_bytes() == content_for("capped.bin", size)
    # The first answer, closed when its next piece goes to another connection, can still be
    # finishing on the server's side: it may count once more there.
    assert server.max_in_flight in (8, 9)
    starts = sorted(r.at for r in server.requests_for("/data/capped.bin"))
    assert starts[7] - starts[0] < 1.5  # all eight within a few probe windows, not seconds


async def test_ramp_up_goes_on_when_several_capped_connections_add_up_to_fast(
    server: LocalServer, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four capped connections together above AUTO_FAST_BYTES still grow to the cap."""
    monkeypatch.setattr(_segments, "AUTO_PROBE_SECONDS", 0.1)
    # Above one capped connection, below four: it once stopped the ramp-up at four.
    monkeypatch.setattr(_segments, "AUTO_FAST_BYTES", 10 * MIB)
    size = 64 * MIB
    url = server.url("/data/sum.bin", size=size, rate=4 * MIB)
    info = await _one(url, dest, max_per_host=8)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (dest / "sum.bin").read_bytes() == content_for("sum.bin", size)
    # Stopped at four it is 4 or 5 (the closed first answer, see above); the cap is 8.
    assert 5 < server.max_in_flight <= 9


async def test_automatic_ramp_up_stops_when_the_link_is_the_limit(
    server: LocalServer, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared 8 MiB/s link: four connections bring no more than one, so it stops there."""
    monkeypatch.setattr(_segments, "AUTO_PROBE_SECONDS", 0.1)
    size = 16 * MIB
    info = await _one(server.url("/data/link.bin", size=size, link=8 * MIB), dest, max_per_host=16)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (dest / "link.bin").read_bytes() == content_for("link.bin", size)
    assert server.max_in_flight in (4, 5)  # 5: the closed first answer, see above


async def test_automatic_split_keeps_one_connection_when_it_is_fast(
    server: LocalServer, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first connection faster than AUTO_FAST_BYTES/s is the only one: one request."""
    monkeypatch.setattr(_segments, "AUTO_PROBE_SECONDS", 0.1)
    monkeypatch.setattr(_segments, "AUTO_FAST_BYTES", 1)
    size = _segments.AUTO_MIN_BYTES
    info = await _one(server.url("/data/fast.bin", size=size, rate=32 * MIB), dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (dest / "fast.bin").read_bytes() == content_for("fast.bin", size)
    assert len(server.requests_for("/data/fast.bin")) == 1


async def test_automatic_split_leaves_the_cap_to_the_rest_of_the_batch(
    server: LocalServer, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two capped large files with max_per_host=4: together never more than 4 connections."""
    monkeypatch.setattr(_segments, "AUTO_PROBE_SECONDS", 0.1)
    size = 12 * MIB
    urls = [server.url(f"/data/two{i}.bin", size=size, rate=4 * MIB) for i in range(2)]
    results = await nbdl.fetch(urls, dest, tracker="none", max_workers=2, max_per_host=4)
    assert [info.status for info in results] == [nbdl.DownloadStatus.COMPLETED] * 2
    for i in range(2):
        assert (dest / f"two{i}.bin").read_bytes() == content_for(f"two{i}.bin", size)
    assert 3 <= server.max_in_flight <= 5  # 5: a closed first answer, see above


async def test_file_config_segments_one_keeps_one_stream(server: LocalServer, dest: Path) -> None:
    """FileConfig(segments=1) overrides fetch(segments=4): one request."""
    cfg = nbdl.FileConfig(server.url("/data/one.bin", size=SIZE), segments=1)
    info = await _one(cfg, dest, segments=4)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert len(server.requests_for("/data/one.bin")) == 1


async def test_server_ignoring_range_midway_falls_back_to_one_stream(
    server: LocalServer, dest: Path
) -> None:
    """A segment answered 200 (Range ignored) restarts the file in one stream from zero."""
    url = server.url("/data/nr.bin", size=SIZE, fail="ok,ok,norange")
    info = await _one(url, dest, segments=4)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (dest / "nr.bin").read_bytes() == content_for("nr.bin", SIZE)
    last = server.requests_for("/data/nr.bin")[-1]
    assert "Range" not in last.headers
    assert not (dest / "nr.bin.part").exists()


async def test_wrong_content_range_on_a_segment_falls_back(server: LocalServer, dest: Path) -> None:
    """A 206 whose Content-Range is not the range asked for is never written into the file."""
    url = server.url("/data/br.bin", size=SIZE, fail="ok,badrange")
    info = await _one(url, dest, segments=4)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (dest / "br.bin").read_bytes() == content_for("br.bin", SIZE)
    assert "Range" not in server.requests_for("/data/br.bin")[-1].headers


async def test_a_failing_segment_resumes_from_its_own_offset(
    server: LocalServer, dest: Path
) -> None:
    """A segment reset mid-way is retried from where it broke, not from byte zero."""
    url = server.url("/data/rs.bin", size=SIZE, fail="ok,ok,reset")
    info = await _one(url, dest, segments=4, retries=FAST_RETRY)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (dest / "rs.bin").read_bytes() == content_for("rs.bin", SIZE)
    requests = server.requests_for("/data/rs.bin")
    assert sum("Range" not in r.headers for r in requests) == 1  # never restarted from zero
    assert info.resumed_from > 0
    starts = {start for start, _ in _ranges(requests)}
    assert any(start % _segments.MIN_SEGMENT_BYTES for start in starts)  # inside a piece


async def test_segment_progress_survives_a_failed_run(server: LocalServer, dest: Path) -> None:
    """After a failed run the record holds each segment's progress; the next run continues."""
    url = server.url("/data/kp.bin", size=SIZE, fail="ok,ok,reset")
    first = await _one(url, dest, segments=4, retries=0)
    assert first.status is nbdl.DownloadStatus.FAILED
    assert (dest / "kp.bin.part").stat().st_size == SIZE
    (record_file,) = (dest / ".nbdl").glob("*.json")
    spans = sorted(json.loads(record_file.read_text())["segments"])
    assert spans[0][0] == 0
    assert spans[-1][1] == SIZE
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    kept = sum(done for _, _, done in spans)
    assert 0 < kept < SIZE

    # A header marks this run's requests: a request the cancelled first run had already sent
    # may reach the server's log only now.
    second = await _one(url, dest, segments=4, headers={"X-Run": "second"})
    assert second.status is nbdl.DownloadStatus.COMPLETED
    assert second.resumed_from == kept
    requested = [
        r for r in server.requests_for("/data/kp.bin") if r.headers.get("X-Run") == "second"
    ]
    assert requested
    assert all("Range" in r.headers for r in requested)
    assert sum(end - start + 1 for start, end in _ranges(requested) if end) == SIZE - kept
    assert (dest / "kp.bin").read_bytes() == content_for("kp.bin", SIZE)
    assert not (dest / "kp.bin.part").exists()


async def test_resource_changing_between_segments_gives_one_whole_version(
    server: LocalServer, dest: Path
) -> None:
    """A new version between segments (If-Range fails) gives the new file whole, never a mix."""
    url = server.url("/data/ch.bin", size=SIZE, etag="change")
    info = await _one(url, dest, segments=4)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    version = len(server.requests_for("/data/ch.bin")) - 1
    assert (dest / "ch.bin").read_bytes() == content_for("ch.bin", SIZE, version)


async def test_changed_etag_is_caught_when_the_server_ignores_if_range(
    server: LocalServer, dest: Path
) -> None:
    """A 206 carrying another ETag (If-Range ignored) is refused: the file is one version."""
    url = server.url("/data/ig.bin", size=SIZE, etag="change", ifrange="ignore")
    info = await _one(url, dest, segments=4)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    requests = server.requests_for("/data/ig.bin")
    assert "Range" not in requests[-1].headers
    assert (dest / "ig.bin").read_bytes() == content_for("ig.bin", SIZE, len(requests) - 1)


async def test_checksum_covers_the_assembled_file(server: LocalServer, dest: Path) -> None:
    """The checksum is checked over the whole segmented file; a mismatch leaves nothing behind."""
    body = content_for("ck.bin", SIZE)
    good = nbdl.FileConfig(
        server.url("/data/ck.bin", size=SIZE), checksum="sha256:" + hashlib.sha256(body).hexdigest()
    )
    assert (await _one(good, dest, segments=4)).status is nbdl.DownloadStatus.COMPLETED
    bad = nbdl.FileConfig(server.url("/data/ck2.bin", size=SIZE), checksum="sha256:" + "0" * 64)
    info = await _one(bad, dest, segments=4, retries=0)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error_kind is nbdl.ErrorKind.CHECKSUM
    assert not (dest / "ck2.bin").exists()
    assert not (dest / "ck2.bin.part").exists()


async def test_per_host_cap_bounds_the_segments(server: LocalServer, dest: Path) -> None:
    """max_per_host=2 with segments=8: never more than two connections to the host."""
    info = await _one(server.url("/data/cap.bin", size=SIZE), dest, segments=8, max_per_host=2)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert server.max_in_flight <= 2
    assert (dest / "cap.bin").read_bytes() == content_for("cap.bin", SIZE)


async def test_bad_segment_settings_are_refused(dest: Path) -> None:
    """The segments and max_per_host settings must be ints >= 1, in fetch and FileConfig."""
    with pytest.raises(nbdl.InvalidConfigError, match="segments"):
        await nbdl.fetch(["http://127.0.0.1:9/x"], dest, segments=0, tracker="none")
    with pytest.raises(nbdl.InvalidConfigError, match="max_per_host"):
        await nbdl.fetch(["http://127.0.0.1:9/x"], dest, max_per_host=0, tracker="none")
    with pytest.raises(ValueError, match="segments"):
        nbdl.FileConfig("http://127.0.0.1:9/x", segments=True)


async def test_hard_kill_mid_segments_resumes_from_the_saved_progress(
    server: LocalServer, dest: Path
) -> None:
    """After SIGKILL the record (saved every second) lets each piece resume; no byte 0 restart."""
    url = server.url("/data/hk.bin", size=SIZE, rate=1 * MIB)
    code = "import asyncio, sys, nbdl; asyncio.run(nbdl.fetch([sys.argv[1]], sys.argv[2], "
    code += "tracker='none', segments=4))"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, url, str(dest))
    record = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # polling files: there is no event to wait on
        records = list((dest / ".nbdl").glob("*.json")) if (dest / ".nbdl").is_dir() else []
        if records:
            spans = json.loads(records[0].read_text()).get("segments") or []
            if sum(done for _, _, done in spans) > 0:
                record = records[0]
                break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert record is not None
    assert not (dest / "hk.bin").exists()
    kept = sum(done for _, _, done in json.loads(record.read_text())["segments"])
    before = len(server.requests_for("/data/hk.bin"))

    info = await _one(url, dest, segments=4)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.resumed_from >= kept > 0
    assert all("Range" in r.headers for r in server.requests_for("/data/hk.bin")[before:])
    assert (dest / "hk.bin").read_bytes() == content_for("hk.bin", SIZE)


async def test_cancel_mid_segments_keeps_progress_for_the_next_run(
    server: LocalServer, dest: Path
) -> None:
    """Cancelling a segmented download saves every piece's progress; the next fetch continues."""
    url = server.url("/data/cx.bin", size=SIZE, rate=2 * MIB)
    task = asyncio.create_task(nbdl.fetch([url], dest, tracker="none", segments=4))
    await asyncio.sleep(0.6)  # no event marks "some bytes are on disk"; 4 x 2 MiB/s is plenty
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record_file,) = (dest / ".nbdl").glob("*.json")
    kept = sum(done for _, _, done in json.loads(record_file.read_text())["segments"])
    assert 0 < kept < SIZE
    info = await _one(url, dest, segments=4)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.resumed_from == kept
    assert (dest / "cx.bin").read_bytes() == content_for("cx.bin", SIZE)


async def test_pieces_go_to_the_redirect_target(server: LocalServer, dest: Path) -> None:
    """After a redirect, piece requests go straight to the final URL, not through the redirect."""
    target = f"/data/rd.bin?size={SIZE}"
    info = await _one(server.url("/redirect/2", to=target), dest, segments=4)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.path.read_bytes() == content_for("rd.bin", SIZE)
    assert len(server.requests_for("/redirect/2")) == 1
    assert len(server.requests_for("/redirect/1")) == 1
    assert len(server.requests_for("/data/rd.bin")) > 1


async def test_checksum_is_fed_on_the_fly_and_finished_from_disk(
    server: LocalServer, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ramped-up file's checksum (part hashed as it came, part read back) matches or fails."""
    monkeypatch.setattr(_segments, "AUTO_PROBE_SECONDS", 0.05)
    size = 12 * MIB
    url = server.url("/data/ckr.bin", size=size, rate=8 * MIB)
    digest = hashlib.sha256(content_for("ckr.bin", size)).hexdigest()
    good = nbdl.FileConfig(url, checksum=f"sha256:{digest}")
    info = await _one(good, dest, max_per_host=8)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert server.max_in_flight > 1
    fast = server.url("/data/ckf.bin", size=size)
    bad = nbdl.FileConfig(fast, checksum=f"sha256:{digest}")
    failed = await _one(bad, dest, retries=0)
    assert failed.error_kind is nbdl.ErrorKind.CHECKSUM
    assert len(server.requests_for("/data/ckf.bin")) == 1
    assert not (dest / "ckf.bin").exists()


async def test_an_idle_connection_takes_half_of_the_last_piece(
    server: LocalServer, dest: Path
) -> None:
    """At the end of a file a free connection splits the piece still being read: exact bytes."""
    size = 3 * MIB  # three 1 MiB pieces for two connections: one would be left reading alone
    url = server.url("/data/steal.bin", size=size, rate=1 * MIB)
    info = await _one(url, dest, segments=2, max_per_host=2)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (dest / "steal.bin").read_bytes() == content_for("steal.bin", size)
    starts = [start for start, _ in _ranges(server.requests_for("/data/steal.bin"))]
    assert any(start % MIB for start in starts)  # a range starting inside a piece
    assert not (dest / "steal.bin.part").exists()


async def test_a_split_piece_that_breaks_resumes_from_the_saved_halves(
    server: LocalServer, dest: Path
) -> None:
    """Both halves of a split piece are reset: the retry resumes each half where it broke."""
    size = 3 * MIB
    # Requests 3 and 4 are the last piece and the half split off it, in either order.
    url = server.url(
        "/data/stealx.bin", size=size, rate=1 * MIB, fail="ok,ok,reset,reset", at=100_000
    )
    info = await _one(url, dest, segments=2, max_per_host=2, retries=FAST_RETRY)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.attempts == 2
    assert (dest / "stealx.bin").read_bytes() == content_for("stealx.bin", size)
    requests = server.requests_for("/data/stealx.bin")
    assert sum("Range" not in r.headers for r in requests) == 1  # never restarted from zero
    starts = [start for start, _ in _ranges(requests)]
    first, retried = starts[:3], starts[3:]  # pieces 1, 2 and the split-off half; then the retry
    assert len([start for start in retried if start - 100_000 in first]) == 2  # where each broke
    assert not list((dest / ".nbdl").glob("*.json"))
