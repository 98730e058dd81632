"""Property tests (hypothesis) of the parsers that read what a server, a URL or a user sends.

Each property states what must hold for ANY input; the examples under each one pin the bugs
these properties found, so they stay fixed even if the generators change.
"""

from __future__ import annotations

import csv
import email.utils
import io
import json
import re
import shlex
import string
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from nbdl import FileConfig, InvalidConfigError
from nbdl._errors import parse_retry_after
from nbdl._headers import parse_content_range
from nbdl._manifest import parse_manifest
from nbdl._naming import (
    _sanitize,
    check_explicit_filename,
    fallback_name,
    name_from_url,
    sanitize_filename,
)
from nbdl._urls import check_url, redact_url

# -- file names -------------------------------------------------------------------------------

#: Windows device names, as its own docs and CPython's ``ntpath.isreserved`` (3.13) list them:
#: reserved with any extension, in any case, and with spaces before the extension.
DEVICES = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{port}{n}" for port in ("com", "lpt") for n in "0123456789\u00b9\u00b2\u00b3"}
)
#: ext4 (and most file systems) refuse longer names; ours leave room for ".part" besides.
FS_NAME_BYTES = 255
PART = ".part"

#: Pieces that break naive sanitizers, mixed with arbitrary text (surrogates included: they are
#: what aiohttp makes of a header's bytes that are not UTF-8).
_PIECES = st.sampled_from(
    [".", "..", "/", "\\", "\x00", "\n", " ", "\t", "\u3000", "CON", "nul", "Com1", "LPT9",
     "lpt\u00b9", "conin$", "com0", ".part", ".PART", "\u202e", "\u200b", "\udcff", "\ud800",
     "e\u0301", "\u00e9", "\U0001f600", ":", "*", "_", "$", "~", "%2F", "%00", ".txt", "a"]
)  # fmt: skip
_ANY_CHAR = st.characters(exclude_categories=())
NAMES = st.one_of(
    st.lists(st.one_of(_PIECES, st.text(_ANY_CHAR, max_size=4)), max_size=12).map("".join),
    st.text(_ANY_CHAR),
    # Long names: past 200 and 255 bytes, with and without an extension, multi-byte or not.
    st.tuples(
        st.text(st.sampled_from("a\u00e9\U0001f600 ._"), min_size=60, max_size=300),
        st.sampled_from(["", ".bin", ".tar.gz", ".part", ". ", "." + "x" * 20]),
    ).map("".join),
)


def assert_safe_name(name: str) -> None:
    """The rules every file name nbdl writes must follow, whatever it was made from."""
    assert name, "empty name"
    assert name not in (".", "..")
    assert not set(name) & set('/\\:*?"<>|'), name
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name)
    # Hidden files (and our state folder .nbdl) start with a dot; Windows drops trailing ones.
    assert not name.startswith("."), name
    assert name == name.strip(), name
    assert not name.endswith("."), name
    assert name.split(".")[0].rstrip(" ").lower() not in DEVICES, name
    # Another file's partial file is "<its name>.part": no final name may be one.
    assert not name.lower().endswith(PART), name
    assert len(name.encode()) + len(PART) <= FS_NAME_BYTES, len(name.encode())
    dest = Path("/srv/downloads")
    assert (dest / name).parent == dest
    assert unicodedata.is_normalized("NFC", name)


@settings(max_examples=600, deadline=None)
@given(NAMES)
@example("a" * 300)
@example("a" * 199 + " b")
@example(" . . a")
@example("nul" + " " * 300 + "x")
@example("con .txt")
@example("caf\udce9.txt")
def test_sanitized_names_are_safe_and_stable(raw: str) -> None:
    """Any text sanitises to "" or a safe name, and sanitising that name again changes nothing."""
    name = sanitize_filename(raw)
    if name:
        assert_safe_name(name)
    assert sanitize_filename(name) == name
    assert _sanitize(raw) == name  # the one-regex shortcut agrees with the full rules


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,230}", fullmatch=True), NAMES))
@example("com0.txt")
@example("report.PART")
def test_plain_name_shortcut_agrees_with_the_full_rules(raw: str) -> None:
    """Names the one-regex shortcut takes come out exactly as the full rules make them."""
    assert sanitize_filename(raw) == _sanitize(raw)


@settings(max_examples=300, deadline=None)
@given(st.one_of(NAMES, st.builds(sanitize_filename, NAMES)))
def test_explicit_filename_accepts_exactly_the_safe_names(name: str) -> None:
    """check_explicit_filename accepts a name iff sanitising leaves it as it is, else ValueError."""
    if name and sanitize_filename(name) == name:
        assert check_explicit_filename(name) == name
    else:
        with pytest.raises(ValueError, match="filename"):
            check_explicit_filename(name)


@pytest.mark.parametrize("value", [None, 3, b"a.bin", ["a"]])
def test_explicit_filename_must_be_a_string(value: object) -> None:
    """A filename that is not a str is a ValueError, not a TypeError deeper down."""
    with pytest.raises(ValueError, match="must be a string"):
        check_explicit_filename(value)


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        # Each of these broke a rule before the properties above were written.
        (" . . a", "a"),  # was ". a": a hidden file, and not stable
        ("a" * 199 + " b", "a" * 199),  # was cut to end in a space
        ("nul" + " " * 300 + "x", "_nul"),  # was cut to "nul   ...", a device on Windows
        ("con .txt", "_con .txt"),  # Windows ignores the spaces: still the console device
        ("CONIN$", "_CONIN$"),
        ("com\u00b9.txt", "_com\u00b9.txt"),
        ("lpt0", "_lpt0"),
        ("caf\udce9.txt", "caf\u00e9.txt"),  # a Latin-1 byte in a header: was UnicodeEncodeError
        ("a\ud800b", "ab"),  # a lone surrogate that no byte explains is dropped
        ("x.bin.part", "x.bin_part"),  # would be the partial file of a download named x.bin
        ("REPORT.Part", "REPORT_Part"),
        (".part", "part"),
    ],
)
def test_names_found_by_the_properties(raw: str, safe: str) -> None:
    """Trailing spaces, devices, undecodable bytes and .part names are made safe."""
    assert sanitize_filename(raw) == safe


def test_empty_explicit_filename_is_refused() -> None:
    """filename="" was accepted (it is its own sanitised form): the file would be dest itself."""
    with pytest.raises(ValueError, match="filename is empty"):
        FileConfig("http://h/a.bin", filename="")


def test_long_names_fit_the_file_system_with_their_part_suffix() -> None:
    """A 300-character name (600 bytes in UTF-8) is cut to fit ext4 with ".part" appended."""
    name = sanitize_filename("\u00e9" * 300 + ".csv")
    assert name.endswith(".csv")
    assert len((name + PART).encode()) <= FS_NAME_BYTES
    with pytest.raises(ValueError, match="not a plain file name"):
        check_explicit_filename("b" * 300)


#: URLs that check_url accepts: varied hosts, ports, and paths with escapes and odd characters.
_PATH_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="#?")
URLS = st.builds(
    "{}://{}{}/{}{}".format,
    st.sampled_from(["http", "https", "HTTP"]),
    st.sampled_from(["e.org", "127.0.0.1", "[::1]", "xn--caf-dma.example", "u:pw@h.io", "h"]),
    st.sampled_from(["", ":8080", ":1"]),
    st.lists(
        st.one_of(
            st.text(_PATH_CHARS, max_size=8),
            st.sampled_from(["..", ".", "%2F", "%2e%2e", "%00", "%ff", "%", "CON", "x.part"]),
        ),
        max_size=5,
    ).map("/".join),
    st.sampled_from(["", "?token=s3cret", "#frag", "?a=1&b=2#f"]),
)


@settings(max_examples=400, deadline=None)
@given(URLS)
@example("http://e.org/%ff%fe.bin")
@example("http://e.org/a/x.bin.part")
def test_names_from_urls_are_safe(url: str) -> None:
    """A URL's name is "" or safe; the fallback name for any accepted URL is never empty."""
    try:
        check_url(url)
    except ValueError:
        assume(False)
    name = name_from_url(url)
    if name:
        assert_safe_name(name)
    assert "s3cret" not in name
    assert_safe_name(fallback_name(url))


# -- Content-Range and Retry-After ------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.builds(
            "bytes {}-{}/{}".format,
            st.text(string.digits + "-+ ", max_size=22),
            st.text(string.digits + "\u0663 ", max_size=22),
            st.text(string.digits + "*", max_size=22),
        ),
    )
)
@example("bytes \u0661-\u0662/\u0663")
@example("bytes 0-0/0")
@example("bytes 5-4/10")
def test_content_range_never_raises_and_is_consistent(value: str) -> None:
    """Any header value parses to None or a range with 0 <= start <= end < total."""
    parsed = parse_content_range(value)
    if parsed is not None:
        start, end, total = parsed
        assert 0 <= start <= end
        assert total is None or end < total


_BIG = 10**19 - 1  # 19 digits: the most the parser accepts


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, _BIG).flatmap(
        lambda s: st.tuples(st.just(s), st.integers(s, _BIG), st.one_of(st.none(), st.integers()))
    ),
    st.sampled_from(["bytes {}-{}/{}", "BYTES  {}-{}/{} ", " Bytes {}-{}/{}"]),
)
def test_content_range_round_trip(range_: tuple[int, int, int | None], form: str) -> None:
    """A formatted valid range parses back to the same numbers; an invalid total gives None."""
    start, end, total = range_
    parsed = parse_content_range(form.format(start, end, "*" if total is None else total))
    if total is None or end < total <= _BIG:
        assert parsed == (start, end, total)
    else:
        assert parsed is None


def test_content_range_needs_ascii_digits() -> None:
    """Digits of other scripts are not HTTP digits: such a header is refused, not converted."""
    assert parse_content_range("bytes \u0661-\u0662/\u0663") is None
    assert parse_content_range("bytes\u00a00-1/2") is None
    assert parse_content_range("bytes 0-1/2") == (0, 1, 2)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.text("0123456789\u00b2\u0661 ,:+-GMTMonDecJan", max_size=40),
        st.builds(email.utils.formatdate, st.floats(0, 2.5e11), usegmt=st.booleans()),
    )
)
@example("\u00b2")
@example("Mon, 01 Jan 99999 00:00:00 GMT")
def test_retry_after_never_raises(value: str) -> None:
    """Any Retry-After value gives None or a wait >= 0 (a 503 with "²" failed as "unexpected")."""
    wait = parse_retry_after(value, now=1_700_000_000)
    assert wait is None or wait >= 0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["{}", " {} ", "{}\t"]))
def test_retry_after_seconds_round_trip(seconds: int, form: str) -> None:
    """Delta-seconds, however spaced, are read as they are; HTTP dates as seconds from now."""
    assert parse_retry_after(form.format(seconds)) == seconds
    now = 1_700_000_000
    date = email.utils.formatdate(now + seconds, usegmt=True)
    assert parse_retry_after(date, now=now) == seconds


# -- URLs -------------------------------------------------------------------------------------

SECRET = "Zq7"  # marks every secret below: the rest of the URL never contains it
_SECRET_VALUE = st.builds(
    lambda text: SECRET + text,
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="#&"), max_size=6),
)
_SAFE = st.text(st.sampled_from(string.ascii_lowercase + string.digits + "-._~%!$'()*+,;:"))


def _url_with_secrets(
    scheme: str, user: str, password: str, host: str, path: str, query: list[tuple[str, str]]
) -> str:
    auth = f"{user}:{quote(password, safe='')}@" if password else ""
    qs = "&".join(f"{quote(k, safe='')}={v}" for k, v in query)
    return f"{scheme}{auth}{host}{path}" + (f"?{qs}" if qs else "")


SECRET_URLS = st.builds(
    _url_with_secrets,
    st.sampled_from(["https://", "http://", "ftp://", "https:/", "https:", "", "//", "htps://"]),
    st.text(string.ascii_lowercase, max_size=4),
    st.one_of(st.just(""), _SECRET_VALUE),
    st.sampled_from(["e.org", "127.0.0.1", "[::1]", "h:8080", "h:99999", "[::1", "a b", ""]),
    _SAFE.map(lambda p: "/" + p),
    st.lists(st.tuples(_SAFE, _SECRET_VALUE), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.builds(str.__add__, SECRET_URLS, st.text())))
def test_redaction_never_raises_and_is_stable(url: str) -> None:
    """redact_url takes any text, and redacting its output again changes nothing."""
    shown = redact_url(url)
    assert redact_url(shown) == shown


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        SECRET_URLS,
        st.builds(str.__add__, SECRET_URLS, st.text(st.characters(exclude_characters="Z"))),
    )
)
@example("http://h/p?x=Zq7#frag")
@example("http:u:Zq7@h?x=Zq7")
@example("http://h/p#access_token=Zq7")
def test_redaction_hides_passwords_and_query_values(url: str) -> None:
    """No password or query value (all marked) of a URL, however malformed, is ever shown."""
    shown = redact_url(url)
    assert SECRET not in shown, shown
    assert redact_url(shown) == shown


@settings(max_examples=300, deadline=None)
@given(st.one_of(SECRET_URLS, st.text(), URLS))
def test_check_url_raises_only_value_errors_without_secrets(url: str) -> None:
    """check_url accepts a URL as it is or raises a ValueError whose message hides secrets."""
    try:
        accepted = check_url(url)
    except ValueError as exc:
        message = str(exc)
    else:
        assert accepted == url
        return
    assert SECRET not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # Each was wrong before the properties: a leak, a broken URL, or unstable output.
        ("http://h/p?x=1#frag", "http://h/p?x=***#***"),
        ("http://h/?a%3Db", "http://h/?***"),  # was "a=b=***", then "a=***" redacted again
        ("http://h/p?x=1&&AbC123", "http://h/p?x=***&&***"),  # a bare token: masked whole
        ("http:u:pw@h/a?x=1", "http:u:***@h/a?x=***"),
        ("h/a?token=abc", "h/a?token=***"),
    ],
)
def test_redaction_cases_found_by_the_properties(url: str, shown: str) -> None:
    """Fragments are masked and stay after the query; relative URLs are masked too."""
    assert redact_url(url) == shown


# -- manifests --------------------------------------------------------------------------------

_LINE_OR_ITEM = re.compile(r"^m\.(txt|csv|json)( line \d+| item \d+)?: ")

_MANIFEST_TEXT = st.one_of(
    st.text(),
    st.lists(
        st.one_of(
            st.sampled_from(
                ["http://h/a", "https://h/b.bin", "url", "url,filename", "url,priority",
                 "url,segments", "filename=x", "priority=x", "priority=9", "checksum=md5:0",
                 "'", '"', "#", ",", "[", "]", "{", "}", '{"url": 1}', '"http://h/c"', "null",
                 "1e999", "9" * 5000, "\x00", "\r", "\u2028", "\x0c", " ", "headers", "=", "\\"]
            ),
            st.text(max_size=5),
        ),
        max_size=20,
    ).map(lambda parts: "".join(parts)),
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(_MANIFEST_TEXT, st.sampled_from(["txt", "csv", "json"]))
@example("[" * 100_000, "json")
@example("[" + "9" * 5000 + "]", "json")
@example("url\n" + "x" * 200_000, "csv")
@example("url,filename\n" + "x" * 200_000, "txt")
@example('[{"url": "http://h/a", "headers": ["x"]}]', "json")
def test_any_manifest_gives_configs_or_a_located_error(text: str, suffix: str) -> None:
    """Any text is a list of FileConfigs or an InvalidConfigError naming the file and line."""
    source = f"m.{suffix}"
    for fmt in (None, suffix if suffix != "txt" else "text"):
        try:
            configs = parse_manifest(text, source, fmt)
        except InvalidConfigError as exc:
            message = str(exc)
        else:
            assert all(isinstance(config, FileConfig) for config in configs)
            continue
        assert _LINE_OR_ITEM.match(message), message


_COMMENTS = st.text(st.characters(exclude_characters="\r\n")).map(lambda text: f"# {text}")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(_COMMENTS, st.just(""), st.just("  http://h/a.bin  ")), max_size=8),
    st.sampled_from(["\n", "\r\n", "\r"]),
)
@example(["# note\u2028more"], "\n")
@example(["# form\x0cfeed", "# next\x85line"], "\n")
def test_text_manifest_errors_name_the_line_an_editor_shows(lines: list[str], eol: str) -> None:
    """Comments may hold any character; a bad line is named by its number in the file."""
    text = eol.join([*lines, "not-a-url", "http://h/b.bin"])
    with pytest.raises(InvalidConfigError, match=rf"^m\.txt line {len(lines) + 1}: "):
        parse_manifest(text, "m.txt")
    assert len(parse_manifest(eol.join(lines), "m.txt")) == lines.count("  http://h/a.bin  ")


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        # Each raised something else than InvalidConfigError before the properties found it.
        ("[" * 100_000, "json", r"^m\.json: invalid JSON: maximum recursion"),
        ("[" + "9" * 5000 + "]", "json", r"^m\.json: invalid JSON: Exceeds the limit"),
        ("url\nhttp://h/a\n" + "x" * 200_000, "csv", r"^m\.csv line 3: field larger"),
        ("url,filename\n" + "x" * 200_000, "txt", r"^m\.txt line 2: field larger"),
        ("x" * 200_000, "txt", r"^m\.txt line 1: "),  # guessing the format raised
    ],
)
def test_manifest_errors_found_by_the_properties(text: str, suffix: str, message: str) -> None:
    """Deep JSON, huge JSON numbers and over-long CSV cells are located InvalidConfigErrors."""
    with pytest.raises(InvalidConfigError, match=message):
        parse_manifest(text, f"m.{suffix}")


@pytest.mark.parametrize(
    "text", ["url,filename\nhttp://h/a,b\n", '["http://h/a"]', "http://h/a filename=b"]
)
def test_manifest_from_stdin_may_start_with_a_byte_order_mark(text: str) -> None:
    """A BOM (Windows tools write one; stdin keeps it) no longer turns the header into a URL."""
    assert parse_manifest("\ufeff" + text, "<stdin>") == parse_manifest(text, "<stdin>")


def test_csv_segments_column_is_a_number() -> None:
    """A CSV segments column is read as an int (it was passed on as text, always refused)."""
    [config] = parse_manifest("url,segments\nhttp://h/a,4\n", "m.csv")
    assert config.segments == 4


_FILENAMES = st.builds(sanitize_filename, NAMES).filter(bool)
VALID_URLS = URLS.filter(lambda url: url == url.strip() and _accepted(url))


def _accepted(url: str) -> bool:
    try:
        check_url(url)
    except ValueError:
        return False
    return True


def _checksum(alg: str, digest: int) -> str:
    width = {"md5": 32, "sha1": 40, "sha256": 64}[alg]
    return f"{alg}:{digest % 16**width:0{width}x}"


CHECKSUMS = st.builds(_checksum, st.sampled_from(["md5", "sha1", "sha256"]), st.integers(0))
_WORDS = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=8
)


def _configs(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[FileConfig]:
    return st.builds(
        FileConfig,
        url=VALID_URLS,
        **{name: st.one_of(st.none(), strategy) for name, strategy in fields.items()},
    )


TEXT_CONFIGS = _configs(filename=_FILENAMES, checksum=CHECKSUMS).flatmap(
    lambda c: st.builds(
        lambda p: FileConfig(c.url, c.filename, p, checksum=c.checksum), st.integers()
    )
)
CSV_CONFIGS = _configs(
    filename=_FILENAMES,
    checksum=CHECKSUMS,
    size_bytes=st.integers(0),
    size_human=_WORDS,
    content_type=_WORDS,
    segments=st.integers(1, 64),
)
JSON_CONFIGS = _configs(
    filename=_FILENAMES,
    checksum=CHECKSUMS,
    size_bytes=st.integers(0),
    size_human=st.text(),
    content_type=st.text(),
    segments=st.integers(1, 64),
    headers=st.dictionaries(
        st.text(string.ascii_letters + "-", min_size=1),
        st.text(st.characters(exclude_characters="\r\n")),
    ),
)


def _text_manifest(configs: list[FileConfig]) -> str:
    lines = ["# a comment", ""]
    for config in configs:
        words = [config.url]
        if config.filename is not None:
            words.append(f"filename={config.filename}")
        if config.priority != 1:
            words.append(f"priority={config.priority}")
        if config.checksum is not None:
            words.append(f"checksum={config.checksum}")
        lines.append(" ".join(shlex.quote(word) for word in words))
    return "\n".join(lines)


def _csv_manifest(configs: list[FileConfig]) -> str:
    columns = ["url", "filename", "priority", "size_bytes", "size_human", "content_type",
               "checksum", "segments"]  # fmt: skip
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for config in configs:
        writer.writerow(["" if getattr(config, c) is None else getattr(config, c) for c in columns])
    return out.getvalue()


def _json_manifest(configs: list[FileConfig]) -> str:
    items: list[object] = []
    for config in configs:
        fields = {
            name: value
            for name in FileConfig.__dataclass_fields__
            if (value := getattr(config, name)) is not None and name != "mirrors"
        }
        items.append(config.url if fields == {"url": config.url, "priority": 1} else fields)
    return json.dumps(items, ensure_ascii=False)


@settings(max_examples=150, deadline=None)
@given(st.lists(TEXT_CONFIGS, max_size=4), st.sampled_from(["", "\ufeff"]))
def test_text_manifest_round_trip(configs: list[FileConfig], bom: str) -> None:
    """A text manifest written from FileConfigs parses back to the same FileConfigs."""
    assert parse_manifest(bom + _text_manifest(configs), "m.txt") == configs


@settings(max_examples=150, deadline=None)
@given(st.lists(CSV_CONFIGS, max_size=4))
def test_csv_manifest_round_trip(configs: list[FileConfig]) -> None:
    """A CSV manifest written by the csv module parses back to the same FileConfigs."""
    assert parse_manifest(_csv_manifest(configs), "m.csv") == configs


@settings(max_examples=150, deadline=None)
@given(st.lists(JSON_CONFIGS, max_size=4))
def test_json_manifest_round_trip(configs: list[FileConfig]) -> None:
    """A JSON manifest of URLs and objects parses back to the same FileConfigs."""
    assert parse_manifest(_json_manifest(configs), "m.json") == configs
