"""Several processes, one folder; and a folder with links and files planted where nbdl writes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import nbdl
from nbdl import _state
from nbdl.testing import LocalServer, content_for

from .conftest import FAST_RETRY, leftovers

#: A process that downloads argv[2:] into argv[1] and prints one JSON line per result.
FETCH = """
import asyncio, json, sys
import nbdl
results = asyncio.run(nbdl.fetch(sys.argv[2:], sys.argv[1], tracker="none", max_workers=4))
for info in results:
    print(json.dumps({"name": info.filename, "status": info.status.value,
                      "cache": info.from_cache, "error": info.error}), flush=True)
"""


def _spawn(dest: Path, *urls: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(FETCH), str(dest), *urls],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _results(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    out, err = await asyncio.to_thread(proc.communicate, timeout=90)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


async def _wait_for_part(path: Path, size: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not (path.exists() and path.stat().st_size >= size):
        assert proc.poll() is None, "the downloading process ended early"
        assert time.monotonic() < deadline, f"{path} never reached {size} bytes"
        await asyncio.sleep(0.02)


class _Notes(nbdl.DownloadTracker):
    """Remembers every note reported, to see what the display was told."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    def patch_download(self, url: str, patch: nbdl.PatchDownloadInfo) -> None:
        super().patch_download(url, patch)
        if patch.note:
            self.notes.append(patch.note)


async def test_two_processes_download_each_file_once(server: LocalServer, dest: Path) -> None:
    """Two processes fetching overlapping files into one folder: no failure, one GET per file."""
    urls = [server.url(f"/data/s{i}.bin", size=400_000, rate=4_000_000) for i in range(8)]
    first = _spawn(dest, *urls[:6])
    second = _spawn(dest, *urls[2:])
    for proc in (first, second):
        results = await _results(proc)
        assert {r["status"] for r in results} == {"completed"}
    for i in range(8):
        assert (dest / f"s{i}.bin").read_bytes() == content_for(f"s{i}.bin", 400_000)
        gets = [r for r in server.requests_for(f"/data/s{i}.bin") if r.method == "GET"]
        assert len(gets) == 1, f"s{i}.bin was requested {len(gets)} times"
    assert leftovers(dest) == [f"s{i}.bin" for i in range(8)]


async def test_waiter_shows_the_other_process_and_finds_the_file(
    server: LocalServer, dest: Path
) -> None:
    """A process whose file another one is writing says so, waits, then makes no request."""
    url = server.url("/data/w.bin", size=2_000_000, rate=2_000_000)
    other = _spawn(dest, url)
    await _wait_for_part(dest / "w.bin.part", 200_000, other)
    tracker = _Notes()
    results = await nbdl.fetch([url], dest, tracker=tracker)
    assert "waiting for another process" in tracker.notes
    assert results[0].status is nbdl.DownloadStatus.COMPLETED
    assert results[0].from_cache
    assert results[0].attempts == 0
    assert len(server.requests_for("/data/w.bin")) == 1
    assert (await _results(other))[0]["status"] == "completed"
    assert (dest / "w.bin").read_bytes() == content_for("w.bin", 2_000_000)


async def test_files_another_process_holds_wait_while_the_rest_download(
    server: LocalServer, dest: Path
) -> None:
    """A worker hands back a file another process holds and downloads the others meanwhile."""
    slow = server.url("/data/slow.bin", size=2_000_000, rate=2_000_000)
    other = _spawn(dest, slow)
    await _wait_for_part(dest / "slow.bin.part", 100_000, other)
    quick = [server.url(f"/data/q{i}.bin", size=1000) for i in range(5)]
    results = await nbdl.fetch([slow, *quick], dest, tracker="none", max_workers=1)
    assert results.ok
    held = results[0]
    assert held.from_cache
    assert all((info.finished_at or 0) < (held.finished_at or 0) for info in results[1:])
    assert (await _results(other))[0]["status"] == "completed"
    assert len(server.requests_for("/data/slow.bin")) == 1


async def test_kill_of_the_holder_lets_a_waiter_resume(server: LocalServer, dest: Path) -> None:
    """Three processes on one file; the holder is killed: a waiter resumes it with Range."""
    size = 3_000_000
    url = server.url("/data/k.bin", size=size, rate=1_500_000)
    holder = _spawn(dest, url)
    await _wait_for_part(dest / "k.bin.part", 600_000, holder)
    waiters = [_spawn(dest, url), _spawn(dest, url)]
    await asyncio.sleep(0.5)  # both are waiting for the lock now
    holder.send_signal(signal.SIGKILL)
    await asyncio.to_thread(holder.wait)
    outcomes = [(await _results(proc))[0] for proc in waiters]
    assert [o["status"] for o in outcomes] == ["completed", "completed"]
    assert sorted(bool(o["cache"]) for o in outcomes) == [False, True]
    assert (dest / "k.bin").read_bytes() == content_for("k.bin", size)
    requests = server.requests_for("/data/k.bin")
    assert len(requests) == 2  # the holder's, and one resumed transfer
    start = int(requests[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert start >= 600_000
    assert leftovers(dest) == ["k.bin"]


async def test_lock_is_free_after_a_kill(server: LocalServer, dest: Path) -> None:
    """A process killed while holding a file leaves no lock: the next run takes it at once."""
    url = server.url("/data/f.bin", size=2_000_000, rate=1_000_000)
    holder = _spawn(dest, url)
    await _wait_for_part(dest / "f.bin.part", 100_000, holder)
    holder.send_signal(signal.SIGKILL)
    await asyncio.to_thread(holder.wait)
    tracker = _Notes()
    started = time.monotonic()
    fast = url.replace("rate=1000000", "rate=50000000")
    results = await nbdl.fetch([fast], dest, tracker=tracker)
    assert results[0].status is nbdl.DownloadStatus.COMPLETED, results[0].error
    assert "waiting for another process" not in tracker.notes
    assert time.monotonic() - started < 10


# -- planted links and files ---------------------------------------------------------------------

BIG = 600_000  # above the resume threshold: these downloads use a named .part and a record


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside dest that a planted link points at; it must never change."""
    target = tmp_path / "outside.txt"
    target.write_text("precious")
    return target


async def _fetch(url: str, dest: Path, **options: object) -> nbdl.DownloadInfo:
    results = await nbdl.fetch([url], dest, tracker="none", retries=FAST_RETRY, **options)  # type: ignore[arg-type]
    return results[0]


async def test_symlink_at_the_partial_path_is_not_followed(
    server: LocalServer, dest: Path, outside: Path
) -> None:
    """A link planted at name.part: a clear file failure, the link's target untouched."""
    dest.mkdir()
    (dest / "p.bin.part").symlink_to(outside)
    info = await _fetch(server.url("/data/p.bin", size=BIG), dest)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error_kind is nbdl.ErrorKind.FILE
    assert "symbolic link is in the way" in (info.error or "")
    assert outside.read_text() == "precious"
    assert not (dest / "p.bin").exists()


async def test_hard_link_at_the_partial_path_is_not_written(
    server: LocalServer, dest: Path, outside: Path
) -> None:
    """A hard link planted at name.part (same inode as a file elsewhere) is refused."""
    dest.mkdir()
    os.link(outside, dest / "h.bin.part")
    info = await _fetch(server.url("/data/h.bin", size=BIG), dest)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert "hard link" in (info.error or "")
    assert outside.read_text() == "precious"


@pytest.mark.parametrize("overwrite", [False, True])
async def test_symlink_at_the_final_path_is_neither_followed_nor_replaced(
    server: LocalServer, dest: Path, outside: Path, overwrite: bool
) -> None:
    """A link at the final path: FAILED, the link and its target stay as they were."""
    dest.mkdir()
    (dest / "l.bin").symlink_to(outside)
    info = await _fetch(server.url("/data/l.bin", size=1000), dest, overwrite=overwrite)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert "symbolic link is in the way" in (info.error or "")
    assert (dest / "l.bin").is_symlink()
    assert outside.read_text() == "precious"


async def test_folder_at_the_final_path_fails_clearly(server: LocalServer, dest: Path) -> None:
    """A folder where the file goes: FAILED naming it, the folder kept."""
    (dest / "d.bin").mkdir(parents=True)
    info = await _fetch(server.url("/data/d.bin", size=1000), dest)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert "a folder is in the way" in (info.error or "")
    assert (dest / "d.bin").is_dir()


async def test_symlinked_state_folder_is_refused(
    server: LocalServer, dest: Path, tmp_path: Path
) -> None:
    """A state folder planted as a link elsewhere: FAILED, nothing written there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest.mkdir()
    (dest / ".nbdl").symlink_to(elsewhere)
    info = await _fetch(server.url("/data/n.bin", size=BIG), dest)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert info.error_kind is nbdl.ErrorKind.FILE
    assert list(elsewhere.iterdir()) == []


async def test_symlinked_record_is_replaced_not_written_through(
    server: LocalServer, dest: Path, outside: Path
) -> None:
    """A link planted at a record's name is neither read nor written through."""
    url = server.url("/data/r.bin", size=BIG)
    record = _state.record_path(dest, url)
    record.parent.mkdir(parents=True)
    record.symlink_to(outside)
    info = await _fetch(url, dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (dest / "r.bin").read_bytes() == content_for("r.bin", BIG)
    assert outside.read_text() == "precious"


async def test_symlinked_lock_file_is_replaced(
    server: LocalServer, dest: Path, tmp_path: Path
) -> None:
    """A dangling link planted at the lock file's name creates nothing where it points."""
    (dest / ".nbdl").mkdir(parents=True)
    target = tmp_path / "created-by-link"
    (dest / ".nbdl" / "lock").symlink_to(target)
    info = await _fetch(server.url("/data/q.bin", size=1000), dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert not target.exists()
    assert not (dest / ".nbdl" / "lock").is_symlink()


async def test_dest_may_be_a_link_the_user_made(server: LocalServer, tmp_path: Path) -> None:
    """A dest that is itself a symlink to a real folder: files land in that folder."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "data"
    link.symlink_to(real)
    info = await _fetch(server.url("/data/u.bin", size=BIG), link)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert (real / "u.bin").read_bytes() == content_for("u.bin", BIG)


async def test_segmented_partial_path_link_is_refused(
    server: LocalServer, dest: Path, outside: Path
) -> None:
    """The segmented path also refuses a link at name.part (fresh pieces are preallocated)."""
    dest.mkdir()
    (dest / "g.bin.part").symlink_to(outside)
    info = await _fetch(server.url("/data/g.bin", size=4_000_000), dest, segments=4)
    assert info.status is nbdl.DownloadStatus.FAILED
    assert "symbolic link is in the way" in (info.error or "")
    assert outside.read_text() == "precious"


async def test_folder_without_working_locks_downloads_with_a_warning(
    server: LocalServer,
    dest: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A file system refusing record locks (NFS 'nolock'): downloads work, one warning is logged."""
    import errno
    import fcntl

    from nbdl import _locks

    def refuse(*args: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    # The kernel cannot be made to refuse locks on a local disk; the lock call stands in for it.
    monkeypatch.setattr(fcntl, "lockf", refuse)
    monkeypatch.setattr(_locks, "_folders", {})
    monkeypatch.setattr(_locks, "_warned", set())
    urls = [server.url(f"/data/n{i}.bin", size=1000) for i in range(3)]
    with caplog.at_level("WARNING", logger="nbdl"):
        first = await nbdl.fetch(urls, dest, tracker="none")
        again = await nbdl.fetch(urls, dest, tracker="none")
    assert first.ok
    assert all(info.from_cache for info in again)
    warnings = [r.getMessage() for r in caplog.records if "no working file locks" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("name", ["../escaped.bin", "/tmp/abs.bin", "", "a/b.bin", "x.bin.part"])
async def test_a_planted_record_cannot_name_a_path_outside_dest(
    server: LocalServer, dest: Path, name: str
) -> None:
    """A record whose name is not a plain file name is ignored: the file lands in dest."""
    url = server.url("/data/r.bin", size=1000)
    record = _state.record_path(dest, url)
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"url": url, "name": name, "complete": True}))
    info = await _fetch(url, dest)
    assert info.status is nbdl.DownloadStatus.COMPLETED
    assert info.path == dest / "r.bin"
    assert not (dest.parent / "escaped.bin").exists()
    assert (dest / "r.bin").read_bytes() == content_for("r.bin", 1000)


async def test_a_stale_record_next_to_a_complete_file_is_removed(
    server: LocalServer, dest: Path
) -> None:
    """A record left by a process killed just after the rename goes on the next run (soak find)."""
    url = server.url("/data/z.bin", size=BIG)
    first = await _fetch(url, dest)
    assert first.status is nbdl.DownloadStatus.COMPLETED
    record = _state.record_path(dest, url)
    record.write_text(json.dumps({"url": url, "name": "z.bin", "total": BIG, "etag": '"x"'}))
    again = await _fetch(url, dest)
    assert again.from_cache
    assert not record.exists()
