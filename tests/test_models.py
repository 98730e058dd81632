import dataclasses
import hashlib
from pathlib import Path

import pytest

import nbdl
from nbdl._errors import parse_retry_after
from nbdl._models import Checksum, FileConfig, format_bytes


def test_fileconfig_is_frozen() -> None:
    """FileConfig cannot be changed after creation."""
    config = nbdl.FileConfig("https://example.org/a.csv")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.url = "https://example.org/b.csv"  # type: ignore[misc]


def test_fileconfig_copies_headers() -> None:
    """A caller mutating its headers dict later does not change the config."""
    headers = {"X-A": "1"}
    config = nbdl.FileConfig("https://example.org/a", headers=headers)
    headers["X-A"] = "2"
    assert config.headers == {"X-A": "1"}


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5", "sha512", "blake2b", "sha3_256"])
def test_checksum_accepts_hashlib_algorithms(algorithm: str) -> None:
    """Any fixed-size hashlib algorithm is accepted in 'alg:hex' form."""
    digest = hashlib.new(algorithm, b"x").hexdigest()
    assert Checksum.parse(f"{algorithm}:{digest.upper()}").hexdigest == digest


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sha256", "look like"),
        ("nosuchalg:abcd", "unknown checksum algorithm"),
        ("sha256:abcd", "64 hex digits"),
        ("md5:" + "z" * 32, "32 hex digits"),
        ("shake_128:" + "0" * 32, "no fixed digest size"),
    ],
)
def test_checksum_rejects_malformed(text: str, message: str) -> None:
    """An unknown algorithm or a malformed digest is a ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        nbdl.FileConfig("https://example.org/a", checksum=text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"priority": "high"}, "priority"),
        ({"priority": True}, "priority"),
        ({"size_bytes": -1}, "size_bytes"),
        ({"filename": "../x"}, "plain file name"),
        ({"filename": "a/b.csv"}, "plain file name"),
        ({"headers": {"Bad Name": "x"}}, "header"),
        ({"headers": {"X": "a\r\nInjected: 1"}}, "header"),
    ],
)
def test_fileconfig_rejects_bad_fields(kwargs: dict[str, object], message: str) -> None:
    """Bad FileConfig fields raise ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        nbdl.FileConfig("https://example.org/a", **kwargs)  # type: ignore[arg-type]


def test_status_values_are_the_contract() -> None:
    """DownloadStatus is a str enum with the documented values."""
    assert [s.value for s in nbdl.DownloadStatus] == [
        "queued",
        "pending",
        "in_progress",
        "processing",
        "completed",
        "failed",
        "cancelled",
    ]
    assert nbdl.DownloadStatus.FAILED == "failed"


def test_error_kinds_are_the_contract() -> None:
    """ErrorKind has at least the seed's classification."""
    assert {"connection", "timeout", "http", "file", "checksum", "generic"} <= {
        k.value for k in nbdl.ErrorKind
    }


def test_patch_applies_only_set_fields() -> None:
    """A patch changes only its non-None fields and returns a new record."""
    info = nbdl.DownloadInfo(url="https://e.org/a", path=Path("a"), total_bytes=10)
    patched = info.apply(nbdl.PatchDownloadInfo(bytes_downloaded=5))
    assert (patched.bytes_downloaded, patched.total_bytes, info.bytes_downloaded) == (5, 10, 0)
    assert patched.get_progress() == 0.5
    assert not patched.is_terminal()


def test_patch_equals_dataclasses_replace() -> None:
    """A patch (applied by filling the copy's slots) makes what dataclasses.replace makes."""
    assert not hasattr(nbdl.DownloadInfo, "__post_init__")  # apply skips __init__
    info = nbdl.DownloadInfo(url="https://e.org/a", path=Path("a"), note="retry 1")
    patch = nbdl.PatchDownloadInfo(
        status=nbdl.DownloadStatus.COMPLETED, bytes_downloaded=7, total_bytes=7, http_status=200
    )
    changes = {k: v for k, v in dataclasses.asdict(patch).items() if v is not None}
    patched = info.apply(patch)
    assert patched == dataclasses.replace(info, **changes)
    assert patched.note == "retry 1"
    assert info.status is nbdl.DownloadStatus.QUEUED
    assert hash(patched) == hash(dataclasses.replace(info, **changes))
    with pytest.raises(dataclasses.FrozenInstanceError):
        patched.status = nbdl.DownloadStatus.FAILED  # type: ignore[misc]


def test_speed_estimate_excludes_resumed_bytes() -> None:
    """Speed counts only the bytes transferred in this run."""
    info = nbdl.DownloadInfo(
        url="https://e.org/a",
        path=Path("a"),
        bytes_downloaded=3000,
        resumed_from=1000,
        started_at=100.0,
        finished_at=102.0,
        status=nbdl.DownloadStatus.COMPLETED,
    )
    assert info.get_speed_estimate() == 1000.0
    assert info.is_terminal()


def test_retry_after_parses_seconds_and_dates() -> None:
    """Retry-After is understood as delta-seconds and as an HTTP date."""
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None


def test_retry_policy_caps_retry_after() -> None:
    """A huge Retry-After is capped, and backoff grows but stays bounded."""
    policy = nbdl.RetryPolicy(backoff=1.0, max_backoff=4.0, max_retry_after=60.0)
    assert policy.delay(1, retry_after=86400.0) == 60.0
    assert 0.5 <= policy.delay(1) <= 1.0
    assert 2.0 <= policy.delay(10) <= 4.0


def test_format_bytes() -> None:
    """Sizes are shown in binary units."""
    assert (format_bytes(512), format_bytes(1536), format_bytes(3 * 1024**3)) == (
        "512 B",
        "1.5 KiB",
        "3.0 GiB",
    )


def test_default_config_of_a_checked_url_equals_a_validated_one() -> None:
    """The queue's shortcut config for a bare URL is the same as FileConfig(url)."""
    url = "https://example.org/data/file.csv?x=1"
    assert FileConfig._of_checked_url(url) == FileConfig(url)
    assert repr(FileConfig._of_checked_url(url)) == repr(FileConfig(url))
