"""Shared fixtures: a real local server, a fresh download folder, and no network but loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import nbdl
from nbdl.testing import LocalServer

#: CI runs the same property examples every time (a red build reproduces; nothing to keep in
#: .hypothesis/); locally each run explores new ones.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

#: Retries without the production backoff, so fault tests take milliseconds, not seconds.
FAST_RETRY = nbdl.RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A fault-injecting HTTP server on 127.0.0.1, fresh for each test."""
    with LocalServer() as srv:
        yield srv


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A download folder that does not exist yet (fetch must create it)."""
    return tmp_path / "downloads"


def leftovers(dest: Path) -> list[str]:
    """Everything under ``dest`` but nbdl's lock and origins files (they stay)."""
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    return [name for name in found if name not in (".nbdl", ".nbdl/lock", ".nbdl/origins")]
