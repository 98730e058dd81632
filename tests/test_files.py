import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import nbdl
from nbdl.testing import LocalServer, content_for

from .conftest import FAST_RETRY, leftovers


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="../../evil.txt"', "evil.txt"),
        ('attachment; filename="..\\\\..\\\\win.txt"', "win.txt"),
        (
            "attachment; filename=\"plain.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt",
            "€ rates.txt",
        ),
        ('attachment; filename="/etc/passwd"', "passwd"),
        ("attachment; filename*=UTF-8''a%07b%0A.txt", "a_b_.txt"),
        ("attachment; filename*=UTF-8''..%2F..%2Fup.txt", "up.txt"),
        ('attachment; filename=".."', "x"),
    ],
)
async def test_content_disposition_names_are_safe(
    server: LocalServer, dest: Path, disposition: str, expected: str
) -> None:
    """Server-given names are used (filename* first) but always land inside dest."""
    results = await nbdl.fetch([server.url("/data/x", cd=disposition)], dest, tracker="none")
    assert results[0].path == dest / expected
    assert results[0].path.is_file()
    assert {p.parent for p in dest.rglob("*") if p.is_file()} <= {dest, dest / ".nbdl"}


async def test_query_string_is_not_in_the_name(server: LocalServer, dest: Path) -> None:
    """The URL's query and fragment never end up in the file name."""
    results = await nbdl.fetch(
        [server.url("/data/q%20file.bin", token="abc")], dest, tracker="none"
    )
    assert results[0].path == dest / "q file.bin"


async def test_explicit_filename_wins(server: LocalServer, dest: Path) -> None:
    """FileConfig.filename beats Content-Disposition and the URL."""
    cfg = nbdl.FileConfig(server.url("/data/x", cd='attachment; filename="server.txt"'), "mine.txt")
    results = await nbdl.fetch([cfg], dest, tracker="none")
    assert results[0].path == dest / "mine.txt"
    assert not (dest / "server.txt").exists()


async def test_server_names_that_clash_fail_clearly(server: LocalServer, dest: Path) -> None:
    """Two downloads the server names alike: the second fails with kind file, the first is kept."""
    cd = 'attachment; filename="same.csv"'
    urls = [server.url("/data/one", cd=cd), server.url("/data/two", cd=cd)]
    results = await nbdl.fetch(urls, dest, max_workers=1, tracker="none")
    assert results[0].path == dest / "same.csv"
    assert results[1].status is nbdl.DownloadStatus.FAILED
    assert results[1].error_kind is nbdl.ErrorKind.FILE
    assert "another download of this batch" in (results[1].error or "")
    assert (dest / "same.csv").read_bytes() == content_for("one", 1024)


async def test_dest_that_is_a_file_fails_with_kind_file(
    server: LocalServer, tmp_path: Path
) -> None:
    """A dest that is a file fails each download with kind file, a clear message, and no request."""
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    results = await nbdl.fetch([server.url("/data/a.bin")], blocker, tracker="none")
    assert results[0].error_kind is nbdl.ErrorKind.FILE
    assert str(blocker) in (results[0].error or "")
    assert server.requests == []
    assert blocker.read_text() == "I am a file"


async def test_folder_removed_during_a_batch_is_made_again(
    server: LocalServer, tmp_path: Path
) -> None:
    """A worker that saw its folder once makes it again if the folder is removed later."""
    worker = nbdl.DownloadWorker()
    dest = tmp_path / "made" / "late"
    for name in ("one", "two"):
        async with nbdl.DownloadManager(dest=dest, worker=worker) as manager:
            manager.add_to_queue(server.url(f"/data/{name}"))
            [info] = await manager.run()
        assert info.status is nbdl.DownloadStatus.COMPLETED, info.error
        assert (dest / name).read_bytes() == content_for(name, 1024)
        shutil.rmtree(tmp_path / "made")


def _run_script(code: str, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", textwrap.dedent(code), *args], **kwargs
    )


async def test_disk_error_mid_stream_fails_with_kind_file(server: LocalServer, dest: Path) -> None:
    """A failing write (size limit, like a full disk) fails with kind file; final path empty."""
    code = """
        import asyncio, resource, signal, sys
        import nbdl
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        r = asyncio.run(nbdl.fetch([sys.argv[1]], sys.argv[2], tracker="none"))
        print(r[0].error_kind, r[0].error)
    """
    url = server.url("/data/big.bin", size=1_000_000)
    proc = _run_script(code, url, str(dest), stdout=subprocess.PIPE)
    out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
    kind, _, message = out.decode().strip().partition(" ")
    assert kind == "file"
    assert "File too large" in message
    assert not (dest / "big.bin").exists()


async def test_hard_kill_leaves_no_final_file_and_resumes(server: LocalServer, dest: Path) -> None:
    """After SIGKILL mid-download only the .part exists; the next run resumes it with Range."""
    size = 6_000_000
    url = server.url("/data/k.bin", size=size, rate=3_000_000)
    code = """
        import asyncio, sys
        import nbdl
        asyncio.run(nbdl.fetch([sys.argv[1]], sys.argv[2], tracker="none"))
    """
    proc = _run_script(code, url, str(dest))
    part = dest / "k.bin.part"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if part.exists() and part.stat().st_size > 1_000_000:
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait)
    assert not (dest / "k.bin").exists()
    kept = part.stat().st_size
    assert 0 < kept < size
    results = await nbdl.fetch([url], dest, tracker="none", retries=FAST_RETRY)
    assert results.ok
    assert results[0].resumed_from == kept
    assert server.requests_for("/data/k.bin")[-1].headers["Range"] == f"bytes={kept}-"
    assert (dest / "k.bin").read_bytes() == content_for("k.bin", size)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="unnamed files need Linux /proc")
async def test_hard_kill_of_a_download_with_nothing_to_resume_leaves_nothing(
    server: LocalServer, dest: Path
) -> None:
    """Without a validator the bytes go to an unnamed file: after SIGKILL the folder is empty."""
    url = server.url("/data/u.bin", size=6_000_000, rate=3_000_000, etag="none")
    code = """
        import asyncio, sys
        import nbdl
        asyncio.run(nbdl.fetch([sys.argv[1]], sys.argv[2], tracker="none"))
    """
    proc = _run_script(code, url, str(dest))
    fds = Path(f"/proc/{proc.pid}/fd")
    writing = False
    deadline = time.monotonic() + 20
    while not writing and time.monotonic() < deadline:
        # An unnamed file shows in /proc as "<folder>/#<inode> (deleted)".
        with contextlib.suppress(OSError):
            writing = any(
                os.readlink(fd).startswith(f"{dest}/#") and os.path.getsize(fd) > 500_000
                for fd in fds.iterdir()
            )
        await asyncio.sleep(0.02)
    assert writing
    assert leftovers(dest) == []
    proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait)
    assert leftovers(dest) == []


async def test_cancel_then_resume(server: LocalServer, dest: Path) -> None:
    """A cancelled download keeps its partial file, and the next fetch continues it."""
    size = 4_000_000
    url = server.url("/data/c.bin", size=size, rate=4_000_000)
    task = asyncio.create_task(nbdl.fetch([url], dest, tracker="none"))
    part = dest / "c.bin.part"
    for _ in range(500):  # polling a file the download writes: there is no event to wait on
        if part.exists() and part.stat().st_size >= 500_000:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = (dest / "c.bin.part").stat().st_size
    assert not (dest / "c.bin").exists()
    results = await nbdl.fetch([url], dest, tracker="none")
    assert results[0].resumed_from == kept
    assert (dest / "c.bin").read_bytes() == content_for("c.bin", size)


async def test_checksum_is_verified_across_a_resume(server: LocalServer, dest: Path) -> None:
    """The checksum covers bytes from before and after a resume."""
    import hashlib

    size = 3_000_000
    body = content_for("h.bin", size)
    cfg = nbdl.FileConfig(
        server.url("/data/h.bin", size=size, fail="reset"),
        checksum="sha512:" + hashlib.sha512(body).hexdigest(),
    )
    results = await nbdl.fetch([cfg], dest, tracker="none", retries=FAST_RETRY)
    assert results.ok
    assert results[0].resumed_from == size // 2
    assert (dest / "h.bin").read_bytes() == body


def test_partial_names_contain_part() -> None:
    """Partial files are named <final>.part beside the target."""
    from nbdl._state import part_path

    assert part_path(Path("/d/data.csv")) == Path("/d/data.csv.part")
    assert os.sep not in part_path(Path("data.csv")).name


def _can_mount_tmpfs() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root to mount a small tmpfs")
async def test_no_space_fails_with_kind_file(server: LocalServer, tmp_path: Path) -> None:
    """A full disk fails the file with kind file, a clear message, and no final file."""
    small = tmp_path / "small"
    small.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)]
    mounted = await asyncio.to_thread(subprocess.run, mount, check=False)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        url = server.url("/data/huge.bin", size=3_000_000)
        results = await nbdl.fetch([url], small, tracker="none", retries=0)
        assert results[0].error_kind is nbdl.ErrorKind.FILE
        assert "No space left on device" in (results[0].error or "")
        assert not (small / "huge.bin").exists()
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(small)], check=False)


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("capsh") is None,
    reason="root ignores permissions, and capsh is not there to drop that power",
)
async def test_permission_denied_fails_with_kind_file(server: LocalServer, tmp_path: Path) -> None:
    """A folder we may not write to fails the file with kind file and 'Permission denied'."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    code = (
        "import asyncio, sys, nbdl; "
        "r = asyncio.run(nbdl.fetch([sys.argv[1]], sys.argv[2], tracker='none')); "
        "print(r[0].error_kind, r[0].error)"
    )
    argv = [sys.executable, "-c", code, server.url("/data/p.bin"), str(locked)]
    if os.geteuid() == 0:
        joined = " ".join(shlex.quote(a) for a in argv)
        argv = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", joined]
    try:
        out = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=60
        )
    finally:
        locked.chmod(0o700)
    kind, _, message = out.stdout.strip().partition(" ")
    assert kind == "file", out.stderr
    assert "Permission denied" in message
    assert list(locked.iterdir()) == []
