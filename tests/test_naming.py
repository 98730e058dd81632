import random
import string

import pytest
from yarl import URL

from nbdl import _naming, _urls
from nbdl._naming import name_from_url, sanitize_filename
from nbdl._urls import check_url, redact_url


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("..", ""),
        ("a\x00b\x1fc.txt", "a_b_c.txt"),
        ("CON.txt", "_CON.txt"),
        ("  .hidden. ", "hidden"),
        ("naïve café.csv", "naïve café.csv"),
        ("x\u202etxt.exe", "xtxt.exe"),
    ],
)
def test_sanitize_keeps_names_inside_the_folder(raw: str, safe: str) -> None:
    """Separators, '..', control and bidi characters never survive sanitising."""
    assert sanitize_filename(raw) == safe


def test_sanitize_limits_length_keeping_extension() -> None:
    """Over-long names are shortened but keep their extension."""
    name = sanitize_filename("a" * 400 + ".tar.gz")
    assert len(name.encode()) <= 200
    assert name.endswith(".gz")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://e.org/data/file.bin?token=abc#frag", "file.bin"),
        ("https://e.org/data/my%20file%2Ecsv", "my file.csv"),
        ("https://e.org/a/%2E%2E%2Fsecret", "secret"),
        ("https://e.org/dir/", "dir"),
        ("https://e.org/", ""),
    ],
)
def test_name_from_url(url: str, name: str) -> None:
    """The last path segment is percent-decoded with query and fragment dropped."""
    assert name_from_url(url) == name


@pytest.mark.parametrize(
    "bad", ["htp://x", "not a url", "", "ftp://e.org/a", "http://", "/a/b", "http://[::1]:@"]
)
def test_check_url_rejects(bad: str) -> None:
    """Only absolute http(s) URLs with a host are accepted."""
    with pytest.raises(ValueError, match="URL"):
        check_url(bad)


def test_redact_masks_password_and_query_values() -> None:
    """Passwords and query values never appear in shown URLs."""
    shown = redact_url("https://user:hunter2@e.org/a.bin?token=s3cret&x=1")
    assert "hunter2" not in shown
    assert "s3cret" not in shown
    assert shown == "https://user:***@e.org/a.bin?token=***&x=***"


def test_plain_name_shortcut_agrees_with_the_full_rules() -> None:
    """Names taken by the one-regex shortcut come out exactly as the full rules make them."""
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "._-" + " /\\:é\u200b"
    names = [
        "f00001.bin",
        "CON.txt",
        "nul",
        "a.",
        "a..b",
        "x" * 230,
        "com1.tar.gz",
        "data-v2_final",
    ]
    names += ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(5000)]
    for name in names:
        assert sanitize_filename(name) == _naming._sanitize(name), name


def test_simple_url_shortcut_agrees_with_yarl() -> None:
    """URLs taken by the one-regex shortcut are valid to yarl and named as from yarl's path."""
    rng = random.Random(11)
    tail = string.ascii_letters + string.digits + "/._-~%?#=&;:@!$'()*+, é[]\\\""
    hosts = ["e.org", "127.0.0.1", "-a-", "a..b", "h.", "[::1]", "us:pw@h", "H", ""]
    ports = ["", ":0", ":80", ":65535", ":65536", ":99999", ":", ":x"]
    urls = ["http://e.org/a/../b", "https://e.org/dir/", "http://e.org", "http://e.org?x/y"]
    for _ in range(10000):
        scheme = rng.choice(["http", "https", "http", "https", "HTTP", "ftp"])
        chars = tail if rng.random() < 0.5 else tail[:70]  # half without the odd characters
        path = rng.choice(["/", "/", "/", ""]) + "".join(rng.choices(chars, k=rng.randint(0, 16)))
        urls.append(f"{scheme}://{rng.choice(hosts)}{rng.choice(ports)}{path}")
    taken = 0
    for url in urls:
        match = _urls.SIMPLE_URL.fullmatch(url)
        try:
            checked = _urls._check_url(url)
        except ValueError:
            checked = None
        try:
            fast = check_url(url)
        except ValueError:
            fast = None
        assert fast == checked, url
        if match and checked is not None:
            taken += 1
            slow_path = URL(url, encoded=True).raw_path
            assert (match[2] or "/") == slow_path, url
            assert name_from_url(url) == _naming._name_from_path(slow_path), url
    assert taken > 1000
