"""The declared dependencies and the imports of nbdl/ agree, both ways."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
#: Distributions whose import name is not their name, lower-cased, with '-' as '_'.
IMPORT_NAMES = {"ipython": "IPython", "backports-zstd": "backports"}
#: Standard-library modules of newer Pythons than the one running the tests (imported there).
NEWER_STDLIB = {"compression"}


def _pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of PEP 508 lines, normalised (PEP 503)."""
    found = set()
    for line in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        assert match, line
        found.add(re.sub(r"[-_.]+", "-", match[1]).lower())
    return found


def _runtime() -> set[str]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    return _names(project["dependencies"])


def _third_party_imports() -> set[str]:
    """Top-level names of every absolute import in nbdl/, standard library excluded."""
    found = set()
    for path in (ROOT / "nbdl").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    stdlib = sys.stdlib_module_names | NEWER_STDLIB
    return {n for n in found if n not in stdlib and n not in ("nbdl",)}


def _import_name(distribution: str) -> str:
    return IMPORT_NAMES.get(distribution, distribution.replace("-", "_"))


def test_every_runtime_dependency_is_imported() -> None:
    """Each package in [project] dependencies is imported somewhere in nbdl/."""
    imported = _third_party_imports()
    unused = sorted(d for d in _runtime() if _import_name(d) not in imported)
    assert unused == []


def test_every_import_is_declared() -> None:
    """Each third-party package nbdl/ imports is a runtime dependency or an optional extra's."""
    extras = _pyproject()["project"]["optional-dependencies"]  # type: ignore[index]
    optional = {
        n for name, reqs in extras.items() if name not in ("test", "bench") for n in _names(reqs)
    }
    declared = {_import_name(d) for d in _runtime() | optional}
    assert sorted(_third_party_imports() - declared) == []


def test_widgets_are_core_and_the_loop_is_never_patched() -> None:
    """`pip install nbdl` brings ipywidgets (7 accepted, for Colab); no nest-asyncio anywhere."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    assert "ipywidgets>=7.6" in project["dependencies"]
    extras = project["optional-dependencies"]
    assert _names(extras["notebook"]) <= _runtime()  # an alias kept for old install lines
    everything = _runtime() | {n for reqs in extras.values() for n in _names(reqs)}
    assert not {"nest-asyncio", "nest-asyncio2"} & everything
    assert not {"nest_asyncio", "nest_asyncio2"} & _third_party_imports()
