import ast
import hashlib
import re
import types
from pathlib import Path

import pytest

from nbdl.testing import LocalServer, content_for

README = Path(__file__).parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), flags=re.DOTALL)


async def test_readme_notebook_example_runs(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's first example works as written, pointed at the local server."""
    code = _python_blocks()[0]
    assert "await nbdl.fetch(" in code
    code = code.replace("https://example.org/data/", server.url("/data/"))
    real = hashlib.sha256(content_for("images.tar", 1024)).hexdigest()
    code = re.sub(r"sha256:[0-9a-f]{64}", f"sha256:{real}", code)
    monkeypatch.chdir(tmp_path)
    compiled = compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, object] = {}
    coroutine = types.FunctionType(compiled, namespace)()
    if coroutine is not None:
        await coroutine
    assert (tmp_path / "data" / "train.csv").read_bytes() == content_for("train.csv", 1024)
    assert (tmp_path / "data" / "images.tar").is_file()
    assert server.requests[0].path == "/data/images.tar"  # priority=5 starts first
