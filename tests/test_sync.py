"""``nbdl.fetch_sync``: in a plain script, inside a running loop, and under Ctrl+C."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

import nbdl
from nbdl.testing import LocalServer, content_for


@pytest.fixture
def custom_sigint() -> Iterator[object]:
    """A SIGINT handler of the caller's own, restored after the test."""

    def handler(signum: int, frame: FrameType | None) -> None:
        """Stand-in for an application's handler."""

    previous = signal.signal(signal.SIGINT, handler)
    yield handler
    signal.signal(signal.SIGINT, previous)


def test_fetch_sync_in_a_plain_script(server: LocalServer, dest: Path) -> None:
    """With no loop running, fetch_sync downloads and returns Results like fetch."""
    urls = [server.url(f"/data/s{i}.bin", size=100_000) for i in range(3)]
    results = nbdl.fetch_sync(urls, dest=dest, tracker="none")
    assert results.ok
    assert (dest / "s1.bin").read_bytes() == content_for("s1.bin", 100_000)


def test_fetch_sync_restores_signal_handlers(
    server: LocalServer, dest: Path, custom_sigint: object
) -> None:
    """The caller's SIGINT handler is the same object after fetch_sync as before."""
    nbdl.fetch_sync([server.url("/data/a.bin")], dest=dest, tracker="none")
    assert signal.getsignal(signal.SIGINT) is custom_sigint


def test_fetch_sync_leaves_the_default_sigint_handler(server: LocalServer, dest: Path) -> None:
    """With Python's default handler installed, it is still installed afterwards."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    nbdl.fetch_sync([server.url("/data/a.bin")], dest=dest, tracker="none")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


async def test_fetch_sync_inside_a_running_loop(server: LocalServer, dest: Path) -> None:
    """Called from a coroutine (as in a notebook cell) it still works and returns Results."""
    urls = [server.url(f"/data/l{i}.bin", size=300_000) for i in range(2)]
    results = nbdl.fetch_sync(urls, dest=dest, tracker="none")
    assert results.ok
    assert [p.name for p in results.paths] == ["l0.bin", "l1.bin"]
    assert not [t for t in threading.enumerate() if t.name == "nbdl-fetch-sync"]


async def test_fetch_sync_refuses_files_a_job_is_writing(server: LocalServer, dest: Path) -> None:
    """fetch_sync will not write the files of a running job; it says to await the job."""
    url = server.url("/data/busy.bin", size=500_000, rate=1_000_000)
    job = nbdl.start([url], dest=dest, tracker="none")
    with pytest.raises(RuntimeError, match="await"):
        nbdl.fetch_sync([url], dest=dest, tracker="none")
    assert (await job).ok


def test_fetch_sync_validates_like_fetch(dest: Path) -> None:
    """Bad input raises InvalidConfigError before any download."""
    with pytest.raises(nbdl.InvalidConfigError, match="retries"):
        nbdl.fetch_sync(["http://127.0.0.1:9/a"], dest=dest, retries=-1)
    assert not dest.exists()


def test_ctrl_c_in_a_script_cancels_and_keeps_the_part_file(tmp_path: Path) -> None:
    """SIGINT during fetch_sync raises KeyboardInterrupt, keeps .part, restores the handler."""
    script = textwrap.dedent(
        """
        import os, signal, sys, threading, time
        from pathlib import Path
        import nbdl
        from nbdl.testing import LocalServer

        dest = Path(sys.argv[1])
        part = dest / "big.bin.part"

        def interrupt_when_started():
            while not (part.exists() and part.stat().st_size > 0):
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)

        with LocalServer() as server:
            url = server.url("/data/big.bin", size=5_000_000, rate=1_000_000)
            threading.Thread(target=interrupt_when_started, daemon=True).start()
            try:
                nbdl.fetch_sync([url], dest=dest, tracker="none")
            except KeyboardInterrupt:
                print("interrupted")
            restored = signal.getsignal(signal.SIGINT) is signal.default_int_handler
            print("handler restored:", restored)
        """
    )
    dest = tmp_path / "dl"
    out = subprocess.run(
        [sys.executable, "-c", script, str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.stdout.split("\n")[:2] == ["interrupted", "handler restored: True"], out.stderr
    assert (dest / "big.bin.part").stat().st_size > 0
    assert not (dest / "big.bin").exists()
