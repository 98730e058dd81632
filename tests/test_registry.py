from __future__ import annotations

import ast
import hashlib
import json
import re
import types
from pathlib import Path

import pooch
import pytest

import nbdl
from nbdl import ErrorKind, InvalidConfigError, Registry
from nbdl._cli import _items as cli_items
from nbdl._cli import build_parser
from nbdl._manifest import parse_manifest
from nbdl.testing import LocalServer, content_for
from tests.conftest import FAST_RETRY, leftovers
from tests.test_cli import assert_one_line_error
from tests.test_cli import nbdl as run_cli

#: What /data/{name} serves without a size parameter (URLs built from base_url carry none).
SIZE = 1024


def sha256(name: str, size: int = SIZE) -> str:
    return hashlib.sha256(content_for(name, size)).hexdigest()


def md5(name: str, size: int = SIZE) -> str:
    return hashlib.md5(content_for(name, size)).hexdigest()


# -- parsing -----------------------------------------------------------------------------------


def test_every_line_form_is_read() -> None:
    """Comments, blank lines, bare hex (sha256), alg:hash in any case, own URLs and quoted names."""
    text = (
        "# a pooch registry\r\n"
        "\n"
        f"plain.csv {'AB' * 32}\r\n"
        f"   indented.bin   MD5:{'CD' * 16}   \n"
        f"own.bin sha1:{'ef' * 20} https://mirror.example.org/x/own.bin?sig=1\n"
        f"'with space.txt' sha512:{'01' * 64}\n"
        "#   commented.bin 1234\n"
    )
    registry = Registry.from_text(text, "https://data.example.org/v1", source="reg.txt")
    assert registry.names == ("plain.csv", "indented.bin", "own.bin", "with space.txt")
    assert len(registry) == 4
    assert "own.bin" in registry
    assert "commented.bin" not in registry
    assert registry.checksum("plain.csv") == "sha256:" + "ab" * 32
    assert registry.checksum("indented.bin") == "md5:" + "cd" * 16
    assert registry.url("plain.csv") == "https://data.example.org/v1/plain.csv"
    assert registry.url("own.bin") == "https://mirror.example.org/x/own.bin?sig=1"
    assert registry.url("with space.txt") == "https://data.example.org/v1/with%20space.txt"
    assert registry.base_url == "https://data.example.org/v1/"


def test_base_url_with_or_without_slash_and_names_percent_encoded() -> None:
    """base_url with or without a trailing '/'; ' ', '%', '#' and non-ASCII are percent-encoded."""
    entries = {"a b%#.bin": "md5:" + "0" * 32, "é.csv": "md5:" + "1" * 32}
    for base in ("https://h.example/data", "https://h.example/data/"):
        registry = Registry(entries, base)
        assert registry.url("a b%#.bin") == "https://h.example/data/a%20b%25%23.bin"
        assert registry.url("é.csv") == "https://h.example/data/%C3%A9.csv"
    assert Registry(entries, "https://h.example").url("é.csv") == "https://h.example/%C3%A9.csv"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.bin\n", r"^reg.txt line 1: expected 'name hash \[url\]', got 1 field:"),
        (
            f"# c\n\na.bin {'0' * 64} https://h/a extra\n",
            r"^reg.txt line 3: expected 'name hash \[url\]', got 4 fields",
        ),
        (
            f"a.bin {'0' * 64}\nb.bin {'1' * 64}\na.bin {'2' * 64}\n",
            r"^reg.txt line 3: 'a.bin' is listed twice \(first in reg.txt line 1\)",
        ),
        (
            f"a.bin {'0' * 32}\n",
            r"^reg.txt line 1: sha256 checksum must be 64 hex.*without 'alg:' is sha256",
        ),
        (f"a.bin sha256:{'g' * 64}\n", r"^reg.txt line 1: sha256 checksum must be 64 hex"),
        (
            "a.bin xxh128:0123456789abcdef0123456789abcdef\n",
            r"^reg.txt line 1: unknown checksum algorithm 'xxh128'",
        ),
        (
            f"a.bin md5:{'0' * 32} ftp://h/a.bin\n",
            r"^reg.txt line 1: not an absolute http\(s\) URL",
        ),
        (
            f"a.bin md5:{'0' * 32} doi:10.5281/zenodo.1/a.bin\n",
            r"^reg.txt line 1: not an absolute http",
        ),
        (
            f"sub/file.csv md5:{'0' * 32}\n",
            r"^reg.txt line 1: 'sub/file.csv' is in a folder; .*plain names",
        ),
        (f"'..\\up.csv' md5:{'0' * 32}\n", r"^reg.txt line 1: .*is in a folder"),
        (f".. md5:{'0' * 32}\n", r"^reg.txt line 1: filename '..' is not a plain file name"),
        (f"con md5:{'0' * 32}\n", r"^reg.txt line 1: filename 'con' is not a plain file name"),
        (f"'a.bin md5:{'0' * 32}\n", r"^reg.txt line 1: No closing quotation"),
        (
            f"a.bin md5:{'0' * 32} https://h/x\nb.bin md5:{'1' * 32} https://h/x\n",
            r"^reg.txt line 2: 'b.bin' has the same URL as 'a.bin' \(reg.txt line 1\)",
        ),
    ],
)
def test_bad_lines_are_named(text: str, message: str) -> None:
    """Every malformed entry raises InvalidConfigError naming the source and its line."""
    with pytest.raises(InvalidConfigError, match=message):
        Registry.from_text(text, "https://h.example/data/", source="reg.txt")


def test_an_entry_without_url_needs_a_base_url() -> None:
    """No base_url: entries with their own URL work, one without is an error naming its line."""
    registry = Registry.from_text(f"a.bin md5:{'0' * 32} https://h/a.bin\n")
    assert registry.url("a.bin") == "https://h/a.bin"
    assert registry.base_url is None
    with pytest.raises(InvalidConfigError, match=r"^<registry> line 2: 'b.bin' has no URL of its"):
        Registry.from_text(f"a.bin md5:{'0' * 32} https://h/a.bin\nb.bin md5:{'1' * 32}\n")


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("ftp://h.example/data/", "base_url: not an absolute http"),
        ("data/", "base_url: not an absolute http"),
        ("https://h.example/data/?token=secret", "has a query or fragment"),
        ("https://h.example/data/#top", "has a query or fragment"),
        ("doi:10.5281/zenodo.3939050", "is a DOI"),
    ],
)
def test_bad_base_urls(base_url: str, message: str) -> None:
    """A base_url that names cannot be appended to is refused before any request."""
    with pytest.raises(InvalidConfigError, match=message) as caught:
        Registry.from_text(f"a.bin md5:{'0' * 32}\n", base_url)
    assert "secret" not in str(caught.value)


def test_from_file_names_the_file(tmp_path: Path) -> None:
    """from_file reads UTF-8 (BOM or not); errors name the path; a missing file is OSError."""
    path = tmp_path / "registry.txt"
    path.write_bytes(b"\xef\xbb\xbfa.bin " + b"1" * 64 + b"\nb.bin md5:zz\n")
    with pytest.raises(InvalidConfigError, match=rf"^{path} line 2: md5 checksum must be"):
        Registry.from_file(path, "https://h/")
    path.write_bytes(b"a.bin " + b"1" * 64 + b"\n")
    assert Registry.from_file(path, "https://h/").names == ("a.bin",)
    path.write_bytes(b"caf\xe9.bin " + b"1" * 64 + b"\n")
    with pytest.raises(InvalidConfigError, match=rf"^{path}: not UTF-8 text \(byte 3"):
        Registry.from_file(path, "https://h/")
    with pytest.raises(FileNotFoundError):
        Registry.from_file(tmp_path / "missing.txt", "https://h/")


def test_mapping_constructor() -> None:
    """Registry(entries, base_url, urls=...) validates like a file; None means not verified."""
    registry = Registry(
        {"a.bin": "0" * 64, "b.bin": None, "c.bin": "md5:" + "0" * 32},
        "https://h.example/d",
        urls={"c.bin": "https://other.example/c.bin"},
    )
    assert registry.checksum("a.bin") == "sha256:" + "0" * 64
    assert registry.checksum("b.bin") is None
    assert registry.url("c.bin") == "https://other.example/c.bin"
    with pytest.raises(InvalidConfigError, match=r"urls names 'x.bin', which is not in the"):
        Registry({"a.bin": "0" * 64}, "https://h/", urls={"x.bin": "https://h/x"})
    with pytest.raises(InvalidConfigError, match=r"^registry entry 'a.bin': a hash must be a str"):
        Registry({"a.bin": 1234}, "https://h/")  # type: ignore[dict-item]
    with pytest.raises(InvalidConfigError, match="entries must be a mapping"):
        Registry(["a.bin"], "https://h/")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="a file name must be a non-empty string"):
        Registry({"": "0" * 64}, "https://h/")


def test_configs_and_paths(tmp_path: Path) -> None:
    """configs() gives one FileConfig per asked name, in the order asked, with extra fields."""
    registry = Registry({"a.bin": "0" * 64, "b.bin": None}, "https://h/", dest=tmp_path)
    configs = registry.configs(["b.bin", "a.bin"], extract=True, priority=4)
    assert [(c.url, c.filename, c.checksum, c.extract, c.priority) for c in configs] == [
        ("https://h/b.bin", "b.bin", None, True, 4),
        ("https://h/a.bin", "a.bin", "sha256:" + "0" * 64, True, 4),
    ]
    assert [c.filename for c in registry.configs()] == ["a.bin", "b.bin"]
    assert [c.filename for c in registry.configs("b.bin")] == ["b.bin"]
    assert registry.path("a.bin") == tmp_path / "a.bin"
    assert registry.path("a.bin", "~/x") == Path("~/x").expanduser() / "a.bin"
    assert Registry({"a.bin": None}, "https://h/").path("a.bin") == Path("a.bin")
    with pytest.raises(InvalidConfigError, match=r"^'a.bn' is not in the registry .*'a.bin'\?"):
        registry.configs(["a.bn"])
    with pytest.raises(InvalidConfigError, match="not in the registry"):
        registry.path("zzz")
    with pytest.raises(InvalidConfigError, match="checksum is set by the registry"):
        registry.configs(checksum="md5:" + "0" * 32)  # type: ignore[call-arg]
    with pytest.raises(InvalidConfigError, match="cannot be shared by every entry"):
        registry.configs(mirrors=["https://m/"])  # type: ignore[call-arg]
    with pytest.raises(InvalidConfigError, match=r"^a\.bin: priority must be an int"):
        registry.configs(priority="high")  # type: ignore[typeddict-item]
    with pytest.raises(InvalidConfigError, match="names must be a file name"):
        registry.configs(3)  # type: ignore[arg-type]


def test_registry_mirrors_become_file_mirrors() -> None:
    """mirrors=[base URLs]: each base_url entry gets mirror + name; own-URL entries get none."""
    registry = Registry.from_text(
        f"'a b.bin' {'0' * 64}\nown.bin {'1' * 64} https://own.example/own.bin\n",
        "https://main.example/d",
        mirrors=["https://m1.example/d", "https://m2.example/x/"],
    )
    assert registry.mirrors == ("https://m1.example/d/", "https://m2.example/x/")
    first, own = registry.configs()
    assert first.mirrors == ("https://m1.example/d/a%20b.bin", "https://m2.example/x/a%20b.bin")
    assert own.mirrors == ()
    entries = {"a.bin": None}
    for mirrors, message in [
        ("https://m.example/", "mirrors must be a list of base URLs"),
        (["https://main.example/d"], "mirrors must differ from each other and base_url"),
        (["https://m.example/", "https://m.example"], "mirrors must differ"),
        (["https://m.example/?sig=1"], r"mirror 'https://m\.example/\?sig=\*\*\*' has a query"),
        (["ftp://m.example/"], "mirror: not an absolute http"),
    ]:
        with pytest.raises(InvalidConfigError, match=message):
            Registry(entries, "https://main.example/d/", mirrors=mirrors)
    with pytest.raises(InvalidConfigError, match="mirrors stand in for base_url, which is missing"):
        Registry(entries, urls={"a.bin": "https://h/a.bin"}, mirrors=["https://m.example/"])


# -- pooch -------------------------------------------------------------------------------------


def test_from_pooch_reads_a_real_pooch(tmp_path: Path) -> None:
    """from_pooch takes a pooch.create(...) object's registry, formatted base_url, urls and path."""
    pup = pooch.create(
        path=tmp_path / "cache",
        base_url="https://data.example.org/{version}/",
        version="1.2.0",
        registry={"a.csv": "md5:" + "0" * 32, "b.csv": "1" * 64},
        urls={"b.csv": "https://elsewhere.example.org/b.csv"},
    )
    registry = Registry.from_pooch(pup)
    assert registry.names == ("a.csv", "b.csv")
    assert registry.url("a.csv") == "https://data.example.org/1.2.0/a.csv" == pup.get_url("a.csv")
    assert registry.url("b.csv") == pup.get_url("b.csv")
    assert registry.checksum("b.csv") == "sha256:" + "1" * 64
    assert registry.path("a.csv") == Path(pup.abspath) / "a.csv"
    with pytest.raises(InvalidConfigError, match=r"from_pooch needs a pooch\.Pooch"):
        Registry.from_pooch(object())
    with pytest.raises(InvalidConfigError, match=r"^pooch registry entry 'd/x.csv': .*in a folder"):
        Registry.from_pooch(
            pooch.create(path=tmp_path, base_url="https://h/", registry={"d/x.csv": None})
        )


async def test_pooch_finds_what_nbdl_fetched(server: LocalServer, tmp_path: Path) -> None:
    """Files fetched from a pooch's registry land where the pooch finds them: no request."""
    names = ["one.csv", "two.csv", "three.csv"]
    pup = pooch.create(
        path=tmp_path / "pooch-cache",
        base_url=server.url("/data/"),
        registry={name: sha256(name) for name in names},
    )
    results = await Registry.from_pooch(pup).fetch(tracker="none")
    assert results.ok, results
    server.reset_stats()
    for name in names:
        assert Path(pup.fetch(name)).read_bytes() == content_for(name, SIZE)
    assert server.requests == []  # pooch verified the files and downloaded nothing


# -- fetching ----------------------------------------------------------------------------------


async def test_fetch_in_parallel_with_checksums_then_rerun_costs_nothing(
    server: LocalServer, dest: Path
) -> None:
    """One batch fetches every entry at once, each verified; a second run sends no request."""
    size = 200_000
    lines = [
        f"slow-{i}.bin sha256:{sha256(f'slow-{i}.bin', size)} "
        f"{server.url(f'/data/slow-{i}.bin', size=size, delay=0.4)}"
        for i in range(4)
    ]
    lines.append(f"plain.bin md5:{md5('plain.bin')}")
    lines.append(f"'a b%.bin' {sha256('a b%.bin')}")
    registry = Registry.from_text("\n".join(lines), server.url("/data"))
    results = await registry.fetch(dest=dest, max_workers=4, tracker="none")
    assert results.ok, results
    assert server.max_in_flight >= 3  # the four slow files were answered at the same time
    for i in range(4):
        assert registry.path(f"slow-{i}.bin", dest).read_bytes() == content_for(
            f"slow-{i}.bin", size
        )
    assert (dest / "a b%.bin").read_bytes() == content_for("a b%.bin", SIZE)
    assert [r.path for r in server.requests_for("/data/a b%.bin")] == ["/data/a b%.bin"]
    assert [info.filename for info in results] == list(registry.names)

    server.reset_stats()
    again = await registry.fetch(dest=dest, tracker="none")
    assert again.ok
    assert all(info.from_cache for info in again)
    assert server.requests == []


async def test_a_wrong_hash_fails_that_file_only(server: LocalServer, dest: Path) -> None:
    """A file whose bytes do not match its hash fails with kind checksum; nothing is left of it."""
    registry = Registry(
        {"good.bin": sha256("good.bin"), "bad.bin": "md5:" + "0" * 32, "big.bin": "0" * 64},
        server.url("/data/"),
        # Large enough to go through a .part file and a resume record, not an unnamed file.
        urls={"big.bin": server.url("/data/big.bin", size=400_000)},
    )
    results = await registry.fetch(dest=dest, tracker="none", retries=FAST_RETRY)
    good, bad, big = results
    assert good.status is nbdl.DownloadStatus.COMPLETED
    for failed in (bad, big):
        assert failed.status is nbdl.DownloadStatus.FAILED
        assert failed.error_kind is ErrorKind.CHECKSUM
    assert "md5 mismatch" in (bad.error or "")
    assert leftovers(dest) == ["good.bin"]
    with pytest.raises(ExceptionGroup) as caught:
        results.raise_for_errors()
    assert all(isinstance(e, nbdl.ChecksumMismatchError) for e in caught.value.exceptions)


async def test_subset_and_unknown_names(server: LocalServer, dest: Path) -> None:
    """fetch(names) downloads only those; an unknown name fails before any request."""
    registry = Registry({n: sha256(n) for n in ("x.bin", "y.bin", "z.bin")}, server.url("/data/"))
    with pytest.raises(InvalidConfigError, match=r"'w\.bin' is not in the registry"):
        await registry.fetch(["x.bin", "w.bin"], dest, tracker="none")
    assert server.requests == []
    results = await registry.fetch(["z.bin", "x.bin"], dest, tracker="none")
    assert [i.filename for i in results] == ["z.bin", "x.bin"]
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == ["x.bin", "z.bin"]


def test_fetch_sync(server: LocalServer, dest: Path) -> None:
    """fetch_sync works where there is no event loop, with the same checks."""
    registry = Registry({"s.bin": sha256("s.bin")}, server.url("/data/"), dest=dest)
    results = registry.fetch_sync(tracker="none")
    assert results.ok
    assert (dest / "s.bin").read_bytes() == content_for("s.bin", SIZE)


async def test_registry_configs_combine_with_other_items(server: LocalServer, dest: Path) -> None:
    """configs() can be mixed with plain URLs in one nbdl.fetch batch."""
    registry = Registry({"r.bin": sha256("r.bin")}, server.url("/data/"))
    results = await nbdl.fetch(
        [server.url("/data/u.bin"), *registry.configs(priority=9)], dest, tracker="none"
    )
    assert results.ok
    assert server.requests[0].path == "/data/r.bin"  # priority 9 started first


# -- command line ------------------------------------------------------------------------------


def test_cli_registry_mode_exit_codes(server: LocalServer, tmp_path: Path) -> None:
    """CLI registry mode (-i REG --base-url URL): 0 all verified, 1 a wrong hash, 2 bad input."""
    dest = tmp_path / "out"
    good = tmp_path / "good.txt"
    good.write_text(
        f"# two files\nr1.bin {sha256('r1.bin')}\nr2.bin md5:{md5('r2.bin')}\n", encoding="utf-8"
    )
    result = run_cli("fetch", "-i", good, "--base-url", server.url("/data"), "-o", dest)
    assert result.returncode == 0, result.stderr
    assert (dest / "r1.bin").read_bytes() == content_for("r1.bin", SIZE)
    assert (dest / "r2.bin").read_bytes() == content_for("r2.bin", SIZE)

    bad = tmp_path / "bad.txt"
    bad.write_text(f"r3.bin {'0' * 64}\n", encoding="utf-8")
    result = run_cli("fetch", "-i", bad, "--base-url", server.url("/data/"), "-o", dest, "--json")
    assert result.returncode == 1
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    assert record["error_kind"] == "checksum"
    assert not (dest / "r3.bin").exists()

    server.reset_stats()
    broken = tmp_path / "broken.txt"
    broken.write_text(f"r1.bin {sha256('r1.bin')}\n\nr4.bin\n", encoding="utf-8")
    assert_one_line_error(
        run_cli("fetch", "-i", broken, "--base-url", server.url("/data/"), "-o", dest),
        f"{broken} line 3: expected 'name hash [url]'",
    )
    assert_one_line_error(
        run_cli("fetch", "--base-url", server.url("/data/"), "-o", dest), "--base-url needs -i"
    )
    assert_one_line_error(
        run_cli("fetch", "-i", tmp_path / "nope.txt", "--base-url", server.url("/data/")),
        "cannot read the registry",
    )
    assert_one_line_error(
        run_cli("fetch", "-i", good, "--base-url", "ftp://h/", "-o", dest), "base_url"
    )
    assert server.requests == []


def test_cli_registry_from_stdin_and_a_manifest_together(server: LocalServer, dest: Path) -> None:
    """-i - reads a registry from stdin; without --base-url -i files stay manifests."""
    stdin = f"in.bin {sha256('in.bin')}\n"
    result = run_cli(
        "fetch", "-i", "-", "--base-url", server.url("/data/"), "-o", dest, stdin=stdin
    )
    assert result.returncode == 0, result.stderr
    assert (dest / "in.bin").read_bytes() == content_for("in.bin", SIZE)
    result = run_cli("fetch", "-i", "-", "-o", dest, "-q", stdin=server.url("/data/m.bin") + "\n")
    assert result.returncode == 0, result.stderr
    assert (dest / "m.bin").is_file()


def test_cli_extract_flag_reaches_every_item(tmp_path: Path) -> None:
    """--extract sets extract=True on URLs, manifest and registry items; extract=false stays."""
    manifest = tmp_path / "list.json"
    manifest.write_text(
        json.dumps(["https://h/a.zip", {"url": "https://h/b.zip", "extract": False}])
    )
    args = build_parser().parse_args(["fetch", "--extract", "https://h/c.tar", "-i", str(manifest)])
    assert [(c.url, c.extract) for c in cli_items(args)] == [
        ("https://h/c.tar", True),
        ("https://h/a.zip", True),
        ("https://h/b.zip", False),
    ]
    registry = tmp_path / "reg.txt"
    registry.write_text(f"d.zip {'0' * 64}\n")
    args = build_parser().parse_args(
        ["fetch", "--extract", "-i", str(registry), "--base-url", "https://h/x"]
    )
    assert [(c.url, c.filename, c.extract) for c in cli_items(args)] == [
        ("https://h/x/d.zip", "d.zip", True)
    ]
    args = build_parser().parse_args(["fetch", "https://h/c.tar"])
    assert cli_items(args)[0].extract is None


def test_cli_mirror_needs_base_url(tmp_path: Path) -> None:
    """--mirror URL adds that base URL as a mirror of every registry entry; alone it is exit 2."""
    registry = tmp_path / "reg.txt"
    registry.write_text(f"d.zip {'0' * 64}\n")
    args = build_parser().parse_args(
        ["fetch", "-i", str(registry), "--base-url", "https://h/x", "--mirror", "https://m/y"]
    )
    assert cli_items(args)[0].mirrors == ("https://m/y/d.zip",)
    assert_one_line_error(
        run_cli("fetch", "-i", registry, "--mirror", "https://m/y"), "--mirror needs --base-url"
    )


# -- mirrors in manifests ----------------------------------------------------------------------


def test_mirrors_in_every_manifest_form() -> None:
    """mirrors="URL1 URL2" in text, a space-separated CSV column, a JSON list: same configs."""
    mirrors = ("https://m1.example/a.bin", "https://m2.example/a.bin")
    text = 'https://h/a.bin mirrors="https://m1.example/a.bin  https://m2.example/a.bin"\n'
    csv = "url,mirrors,priority\nhttps://h/a.bin,https://m1.example/a.bin https://m2.example/a.bin,2\n"
    listed = json.dumps([{"url": "https://h/a.bin", "mirrors": list(mirrors)}])
    for content, source in ((text, "l.txt"), (csv, "l.csv"), (listed, "l.json")):
        (config,) = parse_manifest(content, source)
        assert config.mirrors == mirrors, source
    assert parse_manifest("https://h/b.bin\n", "l.txt")[0].mirrors == ()
    with pytest.raises(InvalidConfigError, match=r"^l.txt line 2: not an absolute http"):
        parse_manifest("https://h/a\nhttps://h/b mirrors='ftp://m/b'\n", "l.txt")
    with pytest.raises(InvalidConfigError, match=r"^l.csv line 2: mirrors must differ"):
        parse_manifest("url,mirrors\nhttps://h/a,https://h/a\n", "l.csv")
    with pytest.raises(InvalidConfigError, match=r"^l.json item 0: mirrors must be a list"):
        parse_manifest('[{"url": "https://h/a", "mirrors": "https://m/a"}]', "l.json")


def test_extract_in_every_manifest_form() -> None:
    """Manifests take extract and extract_to as text options, CSV columns and JSON fields."""
    text = "https://h/a.tgz extract=true extract_to=data\nhttps://h/b.tgz extract=no\n"
    csv = "url,extract,extract_to\nhttps://h/a.tgz,TRUE,data\nhttps://h/b.tgz,0,\n"
    listed = json.dumps(
        [
            {"url": "https://h/a.tgz", "extract": True, "extract_to": "data"},
            {"url": "https://h/b.tgz", "extract": False},
        ]
    )
    for content, source in ((text, "l.txt"), (csv, "l.csv"), (listed, "l.json")):
        first, second = parse_manifest(content, source)
        assert (first.extract, first.extract_to) == (True, "data"), source
        assert (second.extract, second.extract_to) == (False, None), source
    with pytest.raises(InvalidConfigError, match=r"^l.csv line 2: extract must be true or false"):
        parse_manifest("url,extract\nhttps://h/a.tgz,maybe\n", "l.csv")


# -- the README --------------------------------------------------------------------------------


async def test_readme_registry_example_runs(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's registry file and code work as written, pointed at the local server."""
    readme = (Path(__file__).parent.parent / "README.md").read_text("utf-8")
    (registry_text,) = re.findall(r"```\n(# registry\.txt\n.*?)```", readme, flags=re.DOTALL)
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    (code,) = [b for b in blocks if "registry.path" in b]

    def real_hash(match: re.Match[str]) -> str:
        name, space, prefix = match[1], match[2], match[3] or ""
        digest = hashlib.new(prefix[:-1] or "sha256", content_for(name, SIZE)).hexdigest()
        return f"{name}{space}{prefix}{digest}"

    registry_text = re.sub(
        r"^(\S+)(\s+)([a-z0-9]+:)?[0-9a-f]+", real_hash, registry_text, flags=re.MULTILINE
    )
    registry_text = registry_text.replace("https://mirror.example.org/", server.url("/data/"))
    (tmp_path / "registry.txt").write_text(registry_text, encoding="utf-8")
    code = code.replace("https://example.org/data/v1/", server.url("/data/"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBDL_CACHE_DIR", str(tmp_path / "cache"))
    compiled = compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, object] = {}
    coroutine = types.FunctionType(compiled, namespace)()
    if coroutine is not None:
        await coroutine
    results = namespace["results"]
    assert isinstance(results, nbdl.Results)
    assert results.ok, results
    assert [i.filename for i in results] == ["train.csv", "labels.json", "images.tar"]
    for name in ("train.csv", "labels.json", "images.tar"):
        assert (tmp_path / "cache" / "mydata" / name).read_bytes() == content_for(name, SIZE)
