"""One engine, many front doors: every front door checks and builds its engine in ``nbdl._plan``.

The architecture is pinned by reading the source (who constructs the engine, what ``_plan``
imports); the behaviour by runs through each front door against a real local server, each
showing that a setting given at that door reached the engine.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import pickle
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import nbdl
from nbdl._cli import main
from nbdl._plan import EngineSettings, check_settings, plan
from nbdl.service import Server
from nbdl.testing import LocalServer, content_for

from .conftest import FAST_RETRY

PACKAGE = Path(nbdl.__file__).parent

#: Where ``DownloadWorker(...)`` / ``DownloadManager(...)`` may be called in ``nbdl/``: the one
#: builder, and the manager's own default worker (a ``DownloadManager`` made directly by a
#: library user, without ``worker=``, still needs one; no front door relies on it).
ALLOWED_CONSTRUCTIONS = {
    ("_plan.py", "DownloadWorker"),
    ("_plan.py", "DownloadManager"),
    ("_manager.py", "DownloadWorker"),
}

#: Front doors and displays: the engine below them must import none of them, even lazily.
FRONT_DOORS = {
    "_fetch",
    "_jobs",
    "_sync",
    "_cli",
    "_cli_options",
    "_registry",
    "_demo",
    "_select",
    "_notebook",
    "_rich",
    "service",
    "distributed",
}
DISPLAY_LIBRARIES = {"ipywidgets", "IPython", "rich", "tqdm", "distributed"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path))


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):  # _manager.DownloadManager(...)
        return func.attr
    return None


def test_only_the_plan_constructs_workers_and_managers() -> None:
    """No module of nbdl/ but _plan builds a DownloadWorker or DownloadManager for a run."""
    found = set()
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = _called_name(node)
                if called in ("DownloadWorker", "DownloadManager"):
                    found.add((name, called))
    assert found - ALLOWED_CONSTRUCTIONS == set()
    # The scan sees the builder itself: it would notice if it went blind.
    assert ("_plan.py", "DownloadManager") in found


def _imports(module: str) -> tuple[set[str], set[str]]:
    """What ``module`` imports anywhere in its source (inside functions too).

    Returns the nbdl modules (dotted, without ``nbdl.``) and the outside top-level packages.
    """
    parts = module.split(".")
    path = PACKAGE.joinpath(*parts[:-1], parts[-1] + ".py")
    if not path.exists():
        path = PACKAGE.joinpath(*parts, "__init__.py")
    ours: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("nbdl."):
                    ours.add(alias.name[len("nbdl.") :])
                else:
                    outside.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                if node.module == "nbdl" or node.module.startswith("nbdl."):
                    ours.add(node.module[len("nbdl.") :])
                else:
                    outside.add(node.module.split(".")[0])
                continue
            base = parts[: len(parts) - node.level]
            if node.module is None:  # from . import _state
                ours.update(".".join([*base, alias.name]) for alias in node.names)
            else:
                ours.add(".".join([*base, node.module]))
    return {name for name in ours if name}, outside


def test_the_plan_imports_no_front_door_even_indirectly() -> None:
    """_plan and everything it imports (lazily too) stay below every front door and display."""
    seen: set[str] = set()
    outside: set[str] = set()
    todo = ["_plan"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        ours, theirs = _imports(module)
        outside |= theirs
        todo.extend(ours)
    assert {"_manager", "_worker"} <= seen  # the walk followed the imports
    assert {module.split(".")[0] for module in seen} & FRONT_DOORS == set()
    assert outside & DISPLAY_LIBRARIES == set()


@dataclass(frozen=True)
class _Label:
    """A processor that only names itself (what pickling needs: a module-level class)."""

    label: str

    def process(self, job: object) -> None:
        """Nothing to do."""


def test_engine_settings_pickle_round_trip_equal() -> None:
    """Checked settings, every field set, come back equal from pickle (as to a Dask worker)."""
    settings = check_settings(
        max_workers=7,
        retries=nbdl.RetryPolicy(retries=5, backoff=0.1),
        timeout=30,
        read_timeout=12.5,
        overwrite=True,
        headers={"X-Plan": "yes"},
        segments=3,
        max_per_host=2,
        extract=True,
        extract_limits=nbdl.ExtractLimits(max_members=10),
        processors=[_Label("p")],
        scheduler="round-robin",
    )
    again = pickle.loads(pickle.dumps(settings))
    assert again == settings
    assert again.retry.retries == 5
    assert again.headers == {"X-Plan": "yes"}
    assert again.processors == (_Label("p"),)


def test_check_settings_names_the_bad_setting() -> None:
    """Each bad setting is an InvalidConfigError naming it; the defaults are fetch's."""
    for name, value in (
        ("max_workers", 0),
        ("retries", -1),
        ("read_timeout", float("nan")),
        ("timeout", 0),
        ("max_per_host", True),
        ("segments", 0),
        ("overwrite", "yes"),
        ("scheduler", "fastest"),
    ):
        with pytest.raises(nbdl.InvalidConfigError, match=name):
            check_settings(**{name: value})
    assert check_settings() == EngineSettings()


def test_the_engine_defaults_are_fetchs() -> None:
    """check_settings' defaults (the service and Dask rely on them) are fetch's own defaults."""
    fetch_defaults = {
        name: p.default
        for name, p in inspect.signature(nbdl.fetch).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    engine_defaults = {
        name: p.default for name, p in inspect.signature(check_settings).parameters.items()
    }
    assert engine_defaults.keys() <= fetch_defaults.keys()
    assert {k: fetch_defaults[k] for k in engine_defaults} == engine_defaults


def test_the_plan_refuses_a_single_item_and_extract_into_an_object_store() -> None:
    """A bare URL, and extract into a store, fail at plan time, before any session or request."""
    with pytest.raises(nbdl.InvalidConfigError, match="wrap a single one in a list"):
        plan(EngineSettings(), "http://127.0.0.1:9/a", ".", tracker=nbdl.NullTracker())
    with pytest.raises(nbdl.InvalidConfigError, match="local dest folder"):
        plan(
            EngineSettings(extract=True),
            ["http://127.0.0.1:9/a"],
            "memory://plan",
            tracker=nbdl.NullTracker(),
        )


# -- every front door hands its settings to the engine ------------------------------------------
def _header_seen(server: LocalServer, path: str) -> list[str | None]:
    return [record.headers.get("X-Plan") for record in server.requests_for(path)]


async def test_fetch_start_and_fetch_sync_pass_their_settings_to_the_engine(
    server: LocalServer, tmp_path: Path
) -> None:
    """fetch, start and fetch_sync each send their headers= on the engine's request."""
    for door in ("fetch", "start", "fetch_sync"):
        url = server.url(f"/data/{door}.bin", size=1000)
        options: dict[str, Any] = {"tracker": "none", "headers": {"X-Plan": door}}
        if door == "fetch":
            results = await nbdl.fetch([url], tmp_path / door, **options)
        elif door == "start":
            results = await nbdl.start([url], tmp_path / door, **options)
        else:
            results = await asyncio.to_thread(nbdl.fetch_sync, [url], tmp_path / door, **options)
        assert results.ok
        assert _header_seen(server, f"/data/{door}.bin") == [door]


def test_the_command_line_passes_its_settings_to_the_engine(
    server: LocalServer, dest: Path
) -> None:
    """The CLI's --header and --retries reach the engine: the header is sent, a 503 retried."""
    url = server.url("/data/cli.bin", size=1000, fail="503", retry_after="0")
    assert main(["fetch", url, "-o", str(dest), "-q", "--header", "X-Plan: cli"]) == 0
    assert _header_seen(server, "/data/cli.bin") == ["cli", "cli"]
    assert (dest / "cli.bin").read_bytes() == content_for("cli.bin", 1000)
    url = server.url("/data/once.bin", size=1000, fail="503")
    assert main(["fetch", url, "-o", str(dest), "-q", "--retries", "0"]) == 1
    assert len(server.requests_for("/data/once.bin")) == 1


async def _service_item(dest: Path, url: str, **settings: Any) -> dict[str, Any]:
    """Serve ``dest`` with ``settings``, add ``url``, and return its record once finished."""
    server = await nbdl.serve(dest, **settings)
    try:
        return await _finished(server, url)
    finally:
        await server.close()


async def _finished(server: Server, url: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession(headers=headers) as api:
        async with api.post(f"{server.api}/downloads", json={"url": url}) as resp:
            assert resp.status == 201, await resp.text()
            item_id = (await resp.json())["id"]
        deadline = time.monotonic() + 20
        while True:
            async with api.get(f"{server.api}/downloads/{item_id}") as resp:
                item: dict[str, Any] = await resp.json()
            if item["status"] in ("completed", "failed", "cancelled"):
                return item
            assert time.monotonic() < deadline, item
            await asyncio.sleep(0.05)


async def test_the_service_passes_its_retries_to_the_engine(
    server: LocalServer, tmp_path: Path
) -> None:
    """serve(retries=0) fails on one 503; serve(retries=policy) retries it to completion."""
    url = server.url("/data/svc.bin", size=1000, fail="503")
    item = await _service_item(tmp_path / "none", url, retries=0)
    assert item["status"] == "failed", item
    assert item["attempts"] == 1
    server.reset_stats()
    item = await _service_item(tmp_path / "some", url, retries=FAST_RETRY)
    assert item["status"] == "completed", item
    assert item["attempts"] == 2
    assert (tmp_path / "some" / "svc.bin").read_bytes() == content_for("svc.bin", 1000)


async def test_the_service_checks_its_settings_like_fetch(tmp_path: Path) -> None:
    """The service's bad retries, read_timeout or max_per_host are fetch's InvalidConfigErrors."""
    for name, value in (("retries", -1), ("read_timeout", -5), ("max_per_host", 0)):
        with pytest.raises(nbdl.InvalidConfigError, match=name):
            await nbdl.serve(tmp_path / "dl", **{name: value})
    assert not (tmp_path / "dl").exists()


@pytest.fixture
async def dask_client() -> AsyncIterator[Any]:
    """A one-thread Dask cluster in this process, and an asynchronous client of it."""
    distributed = pytest.importorskip("distributed")
    async with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            asynchronous=True,
            # TCP on loopback: the in-process transport looks up this machine's address by
            # connecting out, which the test network guard refuses.
            protocol="tcp",
            host="127.0.0.1",
            # A free port: the scheduler's HTTP server starts even without a dashboard, and
            # 8787 may be another cluster's.
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster, asynchronous=True) as client,
    ):
        yield client


async def test_a_dask_shard_passes_its_segments_to_the_engine(
    dask_client: Any, server: LocalServer, tmp_path: Path
) -> None:
    """segments=4 given to nbdl.distributed.fetch splits the file on the worker: ranged GETs."""
    import nbdl.distributed

    size = 4 * 1024 * 1024
    url = server.url("/data/shard.bin", size=size)
    results = await nbdl.distributed.fetch(
        [url], tmp_path, client=dask_client, tracker="none", segments=4, headers={"X-Plan": "d"}
    )
    assert results.ok, results
    assert (tmp_path / "shard.bin").read_bytes() == content_for("shard.bin", size)
    requests = server.requests_for("/data/shard.bin")
    assert {record.headers.get("X-Plan") for record in requests} == {"d"}
    ranged = [record for record in requests if "Range" in record.headers]
    assert len(ranged) >= 2, [record.headers.get("Range") for record in requests]


async def test_dask_refuses_what_the_engine_refuses_before_any_shard(
    dask_client: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """extract=True into an object store is refused on the client, as by fetch: no request."""
    pytest.importorskip("obstore")
    import nbdl.distributed

    # Only to describe the store: nothing is ever sent to it.
    for key, value in (
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ):
        monkeypatch.setenv(key, value)
    with pytest.raises(nbdl.InvalidConfigError, match="need a local dest folder"):
        await nbdl.distributed.fetch(
            [server.url("/data/x.tar")],
            "s3://bucket/run",
            client=dask_client,
            tracker="none",
            extract=True,
        )
    assert server.requests == []


async def test_a_shared_session_is_the_one_a_manager_would_make(tmp_path: Path) -> None:
    """EngineSettings.session() has the limits and buffers of the session its manager makes."""
    settings = check_settings(max_workers=5, max_per_host=3)
    shared = settings.session()
    async with settings.manager(tmp_path, tracker=nbdl.NullTracker()) as manager:
        own = manager._client
        assert own is not None
        for session in (shared, own):
            assert session.connector is not None
        assert shared.connector.limit == own.connector.limit
        assert shared.connector.limit_per_host == own.connector.limit_per_host == 3
        assert dict(shared.headers) == dict(own.headers)
        assert shared._read_bufsize == own._read_bufsize
    await shared.close()
