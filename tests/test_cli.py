from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbdl import InvalidConfigError
from nbdl._cli import main
from nbdl._manifest import parse_manifest
from nbdl.testing import LocalServer, content_for

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def nbdl(
    *args: str | Path, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess (stdout is a pipe: log mode)."""
    return subprocess.run(
        [sys.executable, "-m", "nbdl", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nbdl: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_fetch_downloads_and_exits_0(server: LocalServer, dest: Path) -> None:
    """All files completed: exit 0, files in -o DIR, plain log lines without escape codes."""
    result = nbdl(
        "fetch",
        server.url("/data/a.bin", size=100_000),
        server.url("/data/b.bin", size=2000),
        "-o",
        dest,
    )
    assert result.returncode == 0, result.stderr
    assert (dest / "a.bin").read_bytes() == content_for("a.bin", 100_000)
    assert (dest / "b.bin").read_bytes() == content_for("b.bin", 2000)
    assert "done    a.bin" in result.stdout
    assert "nbdl: 2 files: 2 completed" in result.stdout
    assert "\x1b" not in result.stdout


def test_a_failed_file_exits_1_and_says_why(server: LocalServer, dest: Path) -> None:
    """One file failing gives exit 1, and the output names it with its error."""
    result = nbdl(
        "fetch", server.url("/data/ok.bin"), server.url("/data/gone.bin", fail=404), "-o", dest
    )
    assert result.returncode == 1
    assert "FAILED  gone.bin  HTTP 404 Not Found" in result.stdout
    assert "failed: gone.bin: HTTP 404 Not Found" in result.stdout
    assert (dest / "ok.bin").is_file()


def test_quiet_prints_only_failures_on_stderr(server: LocalServer, dest: Path) -> None:
    """--quiet: nothing on stdout; the failure and its reason on stderr."""
    result = nbdl("fetch", "-q", server.url("/data/gone.bin", fail=410), "-o", dest)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "nbdl: failed: gone.bin: HTTP 410 Gone"


def test_bad_usage_exits_2_with_one_line(server: LocalServer, dest: Path) -> None:
    """Bad usage or input: exit 2 with a one-line message, never a traceback."""
    url = server.url("/data/x.bin")
    assert_one_line_error(nbdl(), "a command is needed")
    assert_one_line_error(nbdl("fetch", "-o", dest), "nothing to download")
    assert_one_line_error(nbdl("fetch", "ftp://example.org/x"), "URL 1", "ftp")
    assert_one_line_error(nbdl("fetch", "-j", "zero", url), "invalid int value")
    assert_one_line_error(nbdl("fetch", "-j", "0", url, "-o", dest), "max_workers")
    assert_one_line_error(nbdl("fetch", "--segments", "0", url, "-o", dest), "segments")
    assert_one_line_error(nbdl("fetch", "--header", "no colon", url), "--header")
    assert_one_line_error(nbdl("fetch", "-i", dest / "missing.txt"), "cannot read the manifest")
    assert_one_line_error(
        nbdl("fetch", "--checksum", "md5:" + "0" * 32, url, server.url("/data/y.bin")),
        "--checksum needs exactly one URL",
    )
    assert_one_line_error(nbdl("fetch", "--checksum", "md5:xyz", url), "md5 checksum must be")
    assert not dest.exists()  # nothing was downloaded
    assert server.requests == []


def test_checksum_of_one_url_is_verified(server: LocalServer, dest: Path) -> None:
    """--checksum with one URL: a wrong digest fails the file (exit 1), nothing kept."""
    url = server.url("/data/c.bin", size=5000)
    result = nbdl("fetch", "--checksum", "sha256:" + "0" * 64, url, "-o", dest)
    assert result.returncode == 1
    assert "sha256 mismatch" in result.stdout
    assert not (dest / "c.bin").exists()


def test_text_manifest_with_options_and_comments(server: LocalServer, dest: Path) -> None:
    """A text manifest: comments skipped, filename= and priority= applied."""
    manifest = dest.parent / "list.txt"
    manifest.write_text(
        "# the data\n"
        f"{server.url('/data/one.bin', size=300)}\n"
        "\n"
        f"  {server.url('/data/two.bin', size=400)}  filename='second file.bin' priority=9\n"
    )
    result = nbdl("fetch", "-i", manifest, "-j", "1", "-o", dest)
    assert result.returncode == 0, result.stderr
    assert (dest / "one.bin").read_bytes() == content_for("one.bin", 300)
    assert (dest / "second file.bin").read_bytes() == content_for("two.bin", 400)
    assert [r.path for r in server.requests] == ["/data/two.bin", "/data/one.bin"]


def test_manifest_from_stdin(server: LocalServer, dest: Path) -> None:
    """-i - reads the manifest from standard input."""
    stdin = f"{server.url('/data/in.bin')}\n{server.url('/data/put.bin')}\n"
    result = nbdl("fetch", "-i", "-", "-o", dest, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == ["in.bin", "put.bin"]


def test_csv_and_json_manifests(server: LocalServer, dest: Path) -> None:
    """CSV (url column + FileConfig fields) and JSON (URLs or objects) manifests both work."""
    csv_file = dest.parent / "files.csv"
    csv_file.write_text(f"url,filename\n{server.url('/data/c1.bin')},first.csv\n")
    json_file = dest.parent / "files.json"
    json_file.write_text(
        json.dumps([server.url("/data/j1.bin"), {"url": server.url("/data/j2.bin"), "priority": 3}])
    )
    assert nbdl("fetch", "-i", csv_file, "-o", dest).returncode == 0
    assert nbdl("fetch", "-i", json_file, "-o", dest).returncode == 0
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == [
        "first.csv",
        "j1.bin",
        "j2.bin",
    ]


def test_bad_manifest_line_is_named(server: LocalServer, tmp_path: Path) -> None:
    """A bad manifest line gives exit 2 and a message with the file and line number."""
    cases = {
        "bad.txt": (f"# ok\n{server.url('/data/a')}\nnot a url\n", "bad.txt line 3"),
        "opt.txt": (f"{server.url('/data/a')} size=3\n", "opt.txt line 1: unexpected 'size=3'"),
        "prio.txt": (f"\n{server.url('/data/a')} priority=high\n", "prio.txt line 2: priority"),
        "bad.csv": (f"url,priority\n{server.url('/data/a')},1\nhttp://x/b,nope\n", "line 3"),
        "cols.csv": ("url,colour\nhttp://x/a,red\n", "unknown column 'colour'"),
        "bad.json": ('[\n"http://x/a",\n]\n', "bad.json line 3: invalid JSON"),
        "item.json": ('["http://x/a", {"filename": "b"}]', "item.json item 1: the object has no"),
    }
    for name, (content, needle) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        assert_one_line_error(nbdl("fetch", "-i", path, "-o", tmp_path / "out"), needle)
    assert server.requests == []


def test_json_prints_one_object_per_result(server: LocalServer, dest: Path) -> None:
    """--json: stdout holds exactly one JSON object per input, in input order."""
    result = nbdl(
        "fetch",
        "--json",
        server.url("/data/j.bin", size=1234, token="secret"),
        server.url("/data/nope.bin", fail=404),
        "-o",
        dest,
    )
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1]
    assert records[0]["status"] == "completed"
    assert records[0]["bytes"] == 1234
    assert records[0]["path"] == str(dest / "j.bin")
    assert "secret" not in records[0]["url"]
    assert records[1]["status"] == "failed"
    assert records[1]["http_status"] == 404
    assert records[1]["error"] == "HTTP 404 Not Found"
    assert records[1]["error_kind"] == "http"
    assert "nbdl: 2 files" in result.stderr  # the progress log went to stderr


def test_headers_are_sent(server: LocalServer, dest: Path) -> None:
    """--header 'K: V' is sent with the request."""
    result = nbdl("fetch", "--header", "X-Token: abc", server.url("/data/h.bin"), "-o", dest, "-q")
    assert result.returncode == 0
    assert server.requests[0].headers["X-Token"] == "abc"


def test_segments_split_a_large_file(server: LocalServer, dest: Path) -> None:
    """--segments N fetches a large file as N byte ranges at once, exact bytes."""
    size = 8 * 1024 * 1024
    url = server.url("/data/seg.bin", size=size)
    result = nbdl("fetch", "--segments", "4", "--max-per-host", "4", url, "-o", dest, "-q")
    assert result.returncode == 0, result.stderr
    ranged = [r for r in server.requests_for("/data/seg.bin") if "Range" in r.headers]
    assert len(ranged) >= 3
    assert (dest / "seg.bin").read_bytes() == content_for("seg.bin", size)


def test_ctrl_c_keeps_the_partial_file_and_a_rerun_resumes(server: LocalServer, dest: Path) -> None:
    """SIGINT mid-download: exit 130, the .part file stays; the same command then completes it."""
    size = 1024 * 1024
    url = server.url("/data/slow.bin", size=size, rate=256 * 1024)
    command = [sys.executable, "-m", "nbdl", "fetch", url, "-o", str(dest)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    part = dest / "slow.bin.part"
    deadline = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size >= 128 * 1024):
        assert time.monotonic() < deadline, "the download never started"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    kept = part.stat().st_size
    assert 0 < kept < size
    assert not (dest / "slow.bin").exists()

    result = nbdl("fetch", url, "-o", dest)
    assert result.returncode == 0, result.stderr
    assert (dest / "slow.bin").read_bytes() == content_for("slow.bin", size)
    assert not part.exists()
    assert server.requests[-1].headers.get("Range", "").startswith("bytes=")
    assert "resumed at" in result.stdout


def test_manifest_format_is_recognised_without_a_file_suffix() -> None:
    """Standard input has no suffix: a url header row means CSV, a '[' means JSON."""
    csv_text = "url,priority,checksum\nhttp://h/a.bin,4,\nhttp://h/b.bin,,md5:" + "0" * 32 + "\n"
    configs = parse_manifest(csv_text, "<stdin>")
    assert [(c.url, c.priority, c.checksum) for c in configs] == [
        ("http://h/a.bin", 4, None),
        ("http://h/b.bin", 1, "md5:" + "0" * 32),
    ]
    json_text = '  [{"url": "http://h/c.bin", "headers": {"X-A": "1"}}, "http://h/d.bin"]'
    configs = parse_manifest(json_text, "<stdin>")
    assert configs[0].headers == {"X-A": "1"}
    assert configs[1].url == "http://h/d.bin"
    text = "# url,filename\nhttp://h/e.bin\n"  # a comment that looks like a header is text
    assert [c.url for c in parse_manifest(text, "<stdin>")] == ["http://h/e.bin"]


def test_manifest_errors_name_the_line() -> None:
    """Unbalanced quotes and bad checksums name their line in a text manifest."""
    with pytest.raises(InvalidConfigError, match=r"^l.txt line 2: No closing quotation"):
        parse_manifest("http://h/a\nhttp://h/b filename='x\n", "l.txt")
    with pytest.raises(InvalidConfigError, match=r"^l.txt line 1: .*checksum"):
        parse_manifest("http://h/a checksum=sha256:abc\n", "l.txt")


def test_main_returns_the_status_instead_of_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    """main() called from Python returns 0 for --version and 2 for bad usage; no SystemExit."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("nbdl ")
    assert main(["fetch", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
