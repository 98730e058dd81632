from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_offline_and_exits_0(tmp_path: Path) -> None:
    """`nbdl demo` (what `make demo` runs) downloads the mix, shows the 404, and exits 0."""
    script = Path(sys.executable).parent / "nbdl"
    # The installed console script is what `make demo` runs; fall back to -m without it.
    command = [str(script)] if script.exists() else [sys.executable, "-m", "nbdl"]
    result = subprocess.run(
        [*command, "demo", "-o", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "FAILED  missing.bin  HTTP 404 Not Found" in out
    assert "done    flaky.parquet" in out
    assert "on attempt 2" in out
    assert "nbdl: 66 files: 65 completed, 1 failed" in out
    assert "as expected" in out
    assert (tmp_path / "demo" / "large-1.bin").stat().st_size == 40 * 1024 * 1024
    assert not (tmp_path / "demo" / "missing.bin").exists()
