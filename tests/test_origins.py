"""A file found at its final path is never taken for another URL's file (``nbdl._origins``)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import nbdl
from nbdl._origins import ORIGINS_NAME, origin_key
from nbdl.testing import LocalServer, content_for

ErrorKind = nbdl.ErrorKind


def saved_as(url: str, name: str = "train.csv", **options: object) -> nbdl.FileConfig:
    return nbdl.FileConfig(url, filename=name, **options)  # type: ignore[arg-type]


async def test_another_urls_file_is_never_taken_for_this_ones(
    server: LocalServer, dest: Path
) -> None:
    """A second data set's train.csv fails clearly; the first one's file stays, unrequested."""
    first = server.url("/data/a.csv", size=1000)
    second = server.url("/data/b.csv", size=2000)
    assert (await nbdl.fetch([saved_as(first)], dest, tracker="none")).ok
    results = await nbdl.fetch([saved_as(second)], dest, tracker="none")
    assert results[0].status is nbdl.DownloadStatus.FAILED
    assert results[0].error_kind is ErrorKind.FILE
    assert "holds the file of another URL" in (results[0].error or "")
    assert "overwrite=True" in (results[0].error or "")
    assert (dest / "train.csv").read_bytes() == content_for("a.csv", 1000)
    assert server.requests_for("/data/b.csv") == []


async def test_a_url_finds_its_own_file_whatever_its_query(server: LocalServer, dest: Path) -> None:
    """A re-run with another signature in the query (a presigned URL) skips its own file."""
    url = server.url("/data/a.csv", size=1000)
    assert (await nbdl.fetch([saved_as(url + "&sig=1")], dest, tracker="none")).ok
    again = await nbdl.fetch([saved_as(url + "&sig=2")], dest, tracker="none")
    assert again[0].from_cache
    assert len(server.requests_for("/data/a.csv")) == 1


async def test_overwrite_replaces_another_urls_file_and_remembers_it(
    server: LocalServer, dest: Path
) -> None:
    """overwrite=True takes the name over: then the new URL skips it and the old one is refused."""
    first = server.url("/data/a.csv", size=1000)
    second = server.url("/data/b.csv", size=2000)
    await nbdl.fetch([saved_as(first)], dest, tracker="none")
    replaced = await nbdl.fetch([saved_as(second)], dest, tracker="none", overwrite=True)
    assert replaced.ok
    assert (dest / "train.csv").read_bytes() == content_for("b.csv", 2000)
    assert (await nbdl.fetch([saved_as(second)], dest, tracker="none"))[0].from_cache
    old = await nbdl.fetch([saved_as(first)], dest, tracker="none")
    assert old[0].error_kind is ErrorKind.FILE
    assert (dest / "train.csv").read_bytes() == content_for("b.csv", 2000)


async def test_a_file_put_there_by_hand_is_still_skipped(server: LocalServer, dest: Path) -> None:
    """No origin known (a file the user put there): skipped without a request, as documented."""
    dest.mkdir()
    (dest / "train.csv").write_bytes(b"mine")
    results = await nbdl.fetch([saved_as(server.url("/data/a.csv"))], dest, tracker="none")
    assert results[0].from_cache
    assert server.requests == []
    assert (dest / "train.csv").read_bytes() == b"mine"


async def test_a_checksum_decides_whatever_the_origin(server: LocalServer, dest: Path) -> None:
    """With a checksum the bytes are verified instead: another URL's identical file is accepted."""
    first = server.url("/data/a.csv", size=1000)
    await nbdl.fetch([saved_as(first)], dest, tracker="none")
    digest = hashlib.sha256(content_for("a.csv", 1000)).hexdigest()
    mirror = server.url("/data/elsewhere.csv", size=1000)
    results = await nbdl.fetch(
        [saved_as(mirror, checksum=f"sha256:{digest}")], dest, tracker="none"
    )
    assert results[0].from_cache
    assert server.requests_for("/data/elsewhere.csv") == []


def test_two_processes_with_two_urls_for_one_name(server: LocalServer, dest: Path) -> None:
    """A process that waited for another's train.csv of another URL fails; it never takes it."""
    script = (
        "import asyncio, sys, nbdl\n"
        "config = nbdl.FileConfig(sys.argv[1], filename='train.csv')\n"
        "r = asyncio.run(nbdl.fetch([config], sys.argv[2], tracker='none'))\n"
        "print(r[0].status.value, r[0].error_kind and r[0].error_kind.value)\n"
    )
    first = server.url("/data/a.csv", size=2_000_000, rate=4_000_000)
    second = server.url("/data/b.csv", size=1000)
    slow = subprocess.Popen(
        [sys.executable, "-c", script, first, str(dest)], stdout=subprocess.PIPE, text=True
    )
    for _ in range(500):  # start the second once the first is downloading
        if server.requests_for("/data/a.csv"):
            break
        time.sleep(0.01)
    quick = subprocess.run(
        [sys.executable, "-c", script, second, str(dest)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    out, _ = slow.communicate(timeout=60)
    assert out.split() == ["completed", "None"]
    assert quick.stdout.split() == ["failed", "file"]
    assert (dest / "train.csv").read_bytes() == content_for("a.csv", 2_000_000)
    assert server.requests_for("/data/b.csv") == []


async def test_origins_hold_no_url_token_or_password(server: LocalServer, dest: Path) -> None:
    """The folder keeps a hash per download, never a URL, a token or a password."""
    url = server.url("/data/a.csv", size=100, token="s3cr3t")
    with_user = url.replace("http://", "http://alice:hunter2@")
    await nbdl.fetch([saved_as(with_user)], dest, tracker="none")
    text = (dest / ".nbdl" / ORIGINS_NAME).read_text()
    assert text == f"{origin_key(url)}\ttrain.csv\n"
    assert origin_key(url) == origin_key(with_user.replace("s3cr3t", "other"))


async def test_a_planted_link_at_the_origins_file_is_never_written_through(
    server: LocalServer, dest: Path, tmp_path: Path
) -> None:
    """A link planted at .nbdl/origins is not followed: the target stays as it was."""
    target = tmp_path / "outside.txt"
    target.write_text("untouched")
    (dest / ".nbdl").mkdir(parents=True)
    os.symlink(target, dest / ".nbdl" / ORIGINS_NAME)
    results = await nbdl.fetch([saved_as(server.url("/data/a.csv"))], dest, tracker="none")
    assert results.ok
    assert target.read_text() == "untouched"


async def test_malformed_origin_lines_are_ignored(server: LocalServer, dest: Path) -> None:
    """Garbage and foreign lines in the origins file neither fail a batch nor hide a clash."""
    first = server.url("/data/a.csv", size=1000)
    await nbdl.fetch([saved_as(first)], dest, tracker="none")
    with open(dest / ".nbdl" / ORIGINS_NAME, "ab") as file:
        file.write(b"garbage\n\xff\xfe\ttrain.csv\n" + b"x" * 5000 + b"\nshort\ttrain.csv\n")
    again = await nbdl.fetch([saved_as(first)], dest, tracker="none")
    assert again[0].from_cache
    other = await nbdl.fetch([saved_as(server.url("/data/b.csv"))], dest, tracker="none")
    assert other[0].error_kind is ErrorKind.FILE
