"""End to end through real servers: hostile Content-Disposition values and URL paths.

Whatever a server names a file, or however odd a URL's path is, a download either lands as one
safely named file directly inside ``dest`` or fails with a ``DownloadError`` kind: never a
traceback, never a byte outside ``dest``.
"""

from __future__ import annotations

import asyncio
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import nbdl
from nbdl import DownloadStatus, ErrorKind, InvalidConfigError
from nbdl.testing import LocalServer
from tests.conftest import FAST_RETRY
from tests.test_properties import NAMES, assert_safe_name

SIZE = 10
#: aiohttp warns about each malformed Content-Disposition it parses: here, that is the point.
pytestmark = pytest.mark.filterwarnings(
    "ignore::aiohttp.BadContentDispositionHeader", "ignore::aiohttp.BadContentDispositionParam"
)


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LocalServer]:
    """One server for every example of a property (a server per example would take minutes)."""
    with LocalServer() as srv:
        yield srv


def _check_outcome(url: str, root: Path) -> nbdl.DownloadInfo | None:
    """Fetch ``url`` into ``root/d`` and check the one rule; None if the URL was refused."""
    try:
        [info] = nbdl.fetch_sync([url], root / "d", tracker="none", retries=0)
    except InvalidConfigError:
        return None  # refused before any request: a clean error too
    _check_info(info, root)
    return info


def _check_info(info: nbdl.DownloadInfo, root: Path) -> None:
    dest = root / "d"
    outside = [p for p in root.rglob("*") if p != dest and dest not in p.parents]
    assert not outside, outside
    if info.status is DownloadStatus.COMPLETED:
        assert info.path.parent == dest
        assert_safe_name(info.path.name)
        assert info.path.stat().st_size == SIZE
        assert [p.name for p in dest.iterdir() if p.is_file()] == [info.path.name]
    else:
        assert info.status is DownloadStatus.FAILED, info
        # "generic" is what an exception nobody foresaw becomes: a traceback in disguise.
        assert info.error_kind not in (None, ErrorKind.GENERIC), info.error


#: What servers send: quoted names, RFC 6266 ``filename*``, both, and plain junk.
#: aiohttp's server sends only text without control characters (the raw server below sends
#: bytes); surrogates are what aiohttp's client makes of bytes that are not UTF-8.
_HEADER_TEXT = NAMES.map(
    lambda name: "".join(ch for ch in name if ch == "\t" or unicodedata.category(ch) != "Cc")
).filter(lambda text: not any("\ud800" <= c <= "\udfff" for c in text))
CD_VALUES = st.one_of(
    _HEADER_TEXT.map(lambda name: 'attachment; filename="{}"'.format(name.replace('"', '\\"'))),
    _HEADER_TEXT.map(lambda name: f"attachment; filename*=UTF-8''{quote(name, safe='')}"),
    _HEADER_TEXT.map(lambda name: f"inline; filename=x.bin; filename*=utf-8''{quote(name)}"),
    _HEADER_TEXT.map(lambda text: f"attachment; {text}"),
)


@settings(max_examples=80, deadline=None)
@given(CD_VALUES)
@example('attachment; filename="../../escape.bin"')
@example("attachment; filename*=UTF-8''..%2F..%2Fescape.bin")
@example('attachment; filename=".."')
@example('attachment; filename="CON"')
@example('attachment; filename="x.bin.part"')
@example('attachment; filename=" . . "')
@example('attachment; filename="' + "\u00e9" * 300 + '.bin"')
def test_any_content_disposition_lands_inside_dest(
    shared_server: LocalServer, tmp_path_factory: pytest.TempPathFactory, value: str
) -> None:
    """Any Content-Disposition gives one safe file directly in dest, or a clean failure."""
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    info = _check_outcome(shared_server.url("/data/x.bin", size=SIZE, cd=value), root)
    assert info is not None
    assert info.status is DownloadStatus.COMPLETED, info


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=6).map(lambda t: quote(t, safe="")),
            st.sampled_from(["..", ".", "%2e%2e", "%2F", "%00", "%ff", "CON", "a.part", ";x=1"]),
        ),
        min_size=1,
        max_size=4,
    ).map("".join)
)
@example("%2e%2e%2F%2e%2e%2Fescape")
@example("a" * 300 + ".bin")  # 304 bytes: over ext4's 255
@example("%C3%A9" * 300 + ".csv")  # 604 bytes of UTF-8
@example("nul")
def test_any_url_path_lands_inside_dest(
    shared_server: LocalServer, tmp_path_factory: pytest.TempPathFactory, segment: str
) -> None:
    """Any last URL path segment gives one safe file directly in dest, or a clean failure."""
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    _check_outcome(f"{shared_server.base}/data/{segment}?size={SIZE}", root)


def _fetch_from_raw_server(header: bytes, root: Path) -> nbdl.DownloadInfo:
    """Fetch from a server that sends ``header`` byte for byte (aiohttp's server cannot)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n\r\n%s"
            % (SIZE, header, b"x" * SIZE)
        )
        await writer.drain()
        writer.close()

    async def main() -> nbdl.DownloadInfo:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            url = f"http://127.0.0.1:{port}/x.bin"
            [info] = await nbdl.fetch([url], root / "d", tracker="none", retries=0)
        return info

    return asyncio.run(main())


@settings(max_examples=50, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=40).map(lambda name: b'attachment; filename="%s"' % name),
        st.binary(max_size=40).map(lambda name: b"attachment; filename*=UTF-8''%s" % name),
        st.binary(max_size=60),
    ).map(lambda value: b"Content-Disposition: " + value.replace(b"\r", b"").replace(b"\n", b""))
)
@example(b'Content-Disposition: attachment; filename="\xff\xfe/../\x00x"')
@example(b'Content-Disposition: attachment; filename="a\x1fb\x7f.bin"')
def test_any_header_bytes_land_inside_dest(
    tmp_path_factory: pytest.TempPathFactory, header: bytes
) -> None:
    """Any bytes in a Content-Disposition give one safe file in dest, or a clean failure."""
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    _check_info(_fetch_from_raw_server(header, root), root)


def test_undecodable_header_bytes_name_the_file_as_latin_1(tmp_path: Path) -> None:
    """A filename of Latin-1 bytes (not UTF-8) failed with UnicodeEncodeError; now it is read."""
    header = b'Content-Disposition: attachment; filename="caf\xe9.txt"'
    info = _fetch_from_raw_server(header, tmp_path)
    assert info.status is DownloadStatus.COMPLETED, info.error
    assert (tmp_path / "d" / "caf\u00e9.txt").read_bytes() == b"x" * SIZE


def test_a_non_ascii_retry_after_is_ignored(server: LocalServer, dest: Path) -> None:
    """A 503 with "Retry-After: ²" is retried (float("²") raised: "unexpected error", no retry)."""
    url = server.url("/data/r.bin", size=SIZE, fail="503", retry_after="\u00b2")
    [info] = nbdl.fetch_sync([url], dest, tracker="none", retries=FAST_RETRY)
    assert info.status is DownloadStatus.COMPLETED, info.error
    assert info.attempts == 2
