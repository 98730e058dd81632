from __future__ import annotations

import sys
from pathlib import Path

import pytest

import nbdl
from nbdl import InvalidConfigError, cache_dir
from nbdl.testing import LocalServer, content_for

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the XDG rules are Linux's"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home folder, with neither NBDL_CACHE_DIR nor XDG_CACHE_HOME set."""
    folder = tmp_path / "home"
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("NBDL_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return folder


@linux_only
def test_default_is_the_xdg_default(home: Path) -> None:
    """Nothing set: ~/.cache/NAME on Linux, and the folder is not created."""
    assert cache_dir("mydata") == home / ".cache" / "mydata"
    assert not home.exists()


@linux_only
def test_xdg_cache_home(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$XDG_CACHE_HOME/NAME when XDG_CACHE_HOME is set; an empty one is ignored."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("mydata") == tmp_path / "xdg" / "mydata"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache_dir("mydata") == home / ".cache" / "mydata"


def test_nbdl_cache_dir_wins(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$NBDL_CACHE_DIR/NAME when set, whatever XDG_CACHE_HOME says."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("NBDL_CACHE_DIR", str(tmp_path / "shared"))
    assert cache_dir("mydata") == tmp_path / "shared" / "mydata"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir("other") == tmp_path / "shared" / "other"


@linux_only
def test_empty_nbdl_cache_dir_is_unset(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty or blank NBDL_CACHE_DIR means the platform folder, not the current one."""
    for value in ("", "  "):
        monkeypatch.setenv("NBDL_CACHE_DIR", value)
        assert cache_dir("mydata") == home / ".cache" / "mydata"


def test_nbdl_cache_dir_tilde_and_relative(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'~' is expanded and a relative NBDL_CACHE_DIR is made absolute at the call."""
    monkeypatch.setenv("NBDL_CACHE_DIR", "~/caches")
    assert cache_dir("d") == home / "caches" / "d"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBDL_CACHE_DIR", "rel")
    found = cache_dir("d")
    assert found.is_absolute()
    assert found == tmp_path / "rel" / "d"


@pytest.mark.parametrize("name", ["", "a/b", "../x", "..", "a\\b", "con", "x\x00y", 3, None])
def test_name_must_be_plain(home: Path, name: object) -> None:
    """A name with folders, '..', control or reserved characters, or no str: InvalidConfigError."""
    with pytest.raises(InvalidConfigError, match=r"^cache_dir: "):
        cache_dir(name)  # type: ignore[arg-type]


async def test_fetch_into_the_cache_creates_it(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fetch(dest=cache_dir(name)) creates the folder and the next run costs no request."""
    monkeypatch.setenv("NBDL_CACHE_DIR", str(tmp_path / "c"))
    folder = cache_dir("proj")
    assert not folder.exists()
    url = server.url("/data/c.bin")
    assert (await nbdl.fetch([url], folder, tracker="none")).ok
    assert (folder / "c.bin").read_bytes() == content_for("c.bin", 1024)
    server.reset_stats()
    assert (await nbdl.fetch([url], cache_dir("proj"), tracker="none"))[0].from_cache
    assert server.requests == []
