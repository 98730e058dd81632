import random
import string

import pytest

from nbdl import _naming
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


@pytest.mark.parametrize("bad", ["htp://x", "not a url", "", "ftp://e.org/a", "http://", "/a/b"])
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
