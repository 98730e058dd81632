"""The notebooks and the widget display, run in a real Jupyter kernel (offline, loopback only).

nbclient saves the final widget state of each notebook; messages that a background task of an
earlier cell sends while a later cell runs are dropped by nbclient, so what a job shows after
its cell ended is checked kernel-side instead, with a cell the test appends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

pytestmark = pytest.mark.timeout(180)


# -- running notebooks -------------------------------------------------------------------------
def run_notebook(name: str, cwd: Path, extra: list[str] = ()) -> Any:  # type: ignore[assignment]
    """Execute ``notebooks/name`` (plus ``extra`` cells) in a fresh kernel with cwd ``cwd``."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for source in extra:
        nb.cells.append(nbformat.v4.new_code_cell(source))
    client = NotebookClient(
        nb,
        timeout=90,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


def widget_state(nb: Any) -> dict[str, Any]:
    """Model id to {"model_name", "state"}, as nbclient saved it."""
    saved: dict[str, Any] = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
    return saved["state"]  # type: ignore[no-any-return]


def bars(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every tqdm.notebook bar in the saved state: its label, value, max, style and text."""
    found = []
    for model in state.values():
        children = model["state"].get("children", [])
        if model["model_name"] != "HBoxModel" or len(children) != 3:
            continue
        ltext, pbar, rtext = (state.get(ref.removeprefix("IPY_MODEL_")) for ref in children)
        if pbar is None or pbar["model_name"] != "FloatProgressModel" or not ltext or not rtext:
            continue
        found.append(
            {
                "label": ltext["state"].get("value", "").replace("\u2007", " "),
                "text": rtext["state"].get("value", "").replace("\u2007", " "),
                "value": pbar["state"].get("value"),
                "max": pbar["state"].get("max"),
                "style": pbar["state"].get("bar_style"),
            }
        )
    return found


def bar_for(state: dict[str, Any], filename: str) -> list[dict[str, Any]]:
    """The bars whose label starts with ``filename``."""
    return [bar for bar in bars(state) if bar["label"].strip() == filename]


def tables(state: dict[str, Any]) -> list[str]:
    """The HTML of every nbdl status table."""
    return [
        model["state"]["value"]
        for model in state.values()
        if model["model_name"] == "HTMLModel" and "nbdl-table" in model["state"].get("value", "")
    ]


def stdout(nb: Any, index: int) -> str:
    """Everything cell ``index`` printed."""
    return "".join(o.get("text", "") for o in nb.cells[index].outputs if o.output_type == "stream")


def code_cell(nb: Any, text: str) -> int:
    """The index of the first code cell containing ``text``."""
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and text in c.source)


def errors(nb: Any) -> list[str]:
    return [
        f"{o.ename}: {o.evalue}"
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type == "error"
    ]


# -- the four notebooks ------------------------------------------------------------------------
def test_quickstart_bars_reach_totals_and_rerun_is_cached(tmp_path: Path) -> None:
    """Quickstart runs offline; every file bar is full and green; the re-run makes no request."""
    nb = run_notebook("quickstart.ipynb", tmp_path)
    assert errors(nb) == []
    state = widget_state(nb)
    for i in range(4):
        found = bar_for(state, f"part-{i}.csv")
        assert len(found) == 2, "one bar per run"
        for bar in found:
            assert bar["value"] == bar["max"] == 3_000_000
            assert bar["style"] == "success"
    assert any("cached" in bar["text"] for bar in bar_for(state, "part-0.csv"))
    for table in tables(state):
        for i in range(4):
            assert f"part-{i}.csv" in table
    rerun = code_cell(nb, "requests_before")
    assert "new requests: 0" in stdout(nb, rerun)
    assert (tmp_path / "data" / "quickstart" / "part-3.csv").stat().st_size == 3_000_000


def test_priorities_and_failures_shows_red_bars_and_errors(tmp_path: Path) -> None:
    """Failed files get danger bars and table rows naming their error; the rest complete."""
    nb = run_notebook("priorities-and-failures.ipynb", tmp_path)
    assert errors(nb) == []
    state = widget_state(nb)
    for name in ("tampered.bin", "missing.csv"):
        (bar,) = bar_for(state, name)
        assert bar["style"] == "danger"
    assert "HTTP 404 Not Found" in bar_for(state, "missing.csv")[0]["text"]
    for name in ("low.bin", "urgent.bin", "verified.bin", "flaky.bin", "reset.bin"):
        (bar,) = bar_for(state, name)
        assert bar["style"] == "success"
        assert bar["value"] == bar["max"] > 0
    (table,) = tables(state)
    assert "missing.csv" in table
    assert "HTTP 404 Not Found" in table
    assert "tampered.bin" in table
    assert "sha256 mismatch" in table
    order = code_cell(nb, "server.reset_stats()")
    result = nb.cells[order].outputs[0]["data"]["text/plain"]
    assert result == "['/data/b.bin', '/data/c.bin', '/data/a.bin']"


KERNEL_SIDE_JOB_CHECK = """
import json
def _bar_states(tracker):
    return [
        {"value": b.container.children[1].value, "max": b.container.children[1].max,
         "style": b.container.children[1].bar_style,
         "text": b.container.children[2].value.replace("\\u2007", " ")}
        for b in tracker.bars.values()
    ]
print(json.dumps({"job": _bar_states(job.tracker), "job2": _bar_states(job2.tracker)}))
"""


def test_background_and_cancel(tmp_path: Path) -> None:
    """Jobs run while other cells run; cancel shows 'cancelled' and keeps .part; resume works."""
    nb = run_notebook("background-and-cancel.ipynb", tmp_path, [KERNEL_SIDE_JOB_CHECK])
    assert errors(nb) == []
    running = code_cell(nb, "job done?")
    assert "job done? False" in stdout(nb, running)
    seen = json.loads(stdout(nb, len(nb.cells) - 1))
    assert len(seen["job"]) == 3
    for bar in seen["job"]:
        assert bar["value"] == bar["max"] == 4_000_000
        assert bar["style"] == "success"
    assert len(seen["job2"]) == 2
    for bar in seen["job2"]:
        assert bar["style"] == "warning"
        assert "cancelled" in bar["text"]
        assert 0 < bar["value"] < bar["max"]
    # The cancel cell awaited its job, so nbclient saved what its bars showed.
    state = widget_state(nb)
    for name in ("huge-0.bin", "huge-1.bin"):
        cancelled, resumed = bar_for(state, name)
        assert cancelled["style"] == "warning"
        assert "cancelled" in cancelled["text"]
        assert resumed["style"] == "success"
        assert resumed["value"] == resumed["max"] == 8_000_000
    shared = code_cell(nb, "waits for")
    assert "cached: [True, True]" in stdout(nb, shared)


def test_custom_tracker_notebook(tmp_path: Path) -> None:
    """The custom tracker notebook runs; of 61 files only the slow ones and the failure get bars."""
    nb = run_notebook("custom-tracker.ipynb", tmp_path)
    assert errors(nb) == []
    counted = code_cell(nb, "bars shown for")
    assert stdout(nb, counted).strip().splitlines() == [
        "4 bars shown for 61 files:",
        "['broken.bin', 'slow-0.bin', 'slow-1.bin', 'slow-2.bin']",
    ]
    state = widget_state(nb)
    item_bars = [b for b in bars(state) if b["label"].startswith(("item-", "slow-", "broken"))]
    assert len(item_bars) <= 4
    assert {b["style"] for b in item_bars if b["label"].startswith("slow-")} == {"success"}
    assert [b["style"] for b in item_bars if b["label"].startswith("broken")] == ["danger"]
    assert any("broken.bin" in table and "HTTP 404" in table for table in tables(state))


def test_cells_after_fetch_sync_all_run(tmp_path: Path) -> None:
    """'Run All' runs every cell after a fetch_sync cell; its bars reach their totals."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import nbdl\nfrom nbdl.testing import LocalServer\nserver = LocalServer().start()"
        ),
        nbformat.v4.new_code_cell(
            "urls = [server.url(f'/data/s{i}.bin', size=1_000_000, rate=4_000_000)"
            " for i in range(2)]\n"
            "results = nbdl.fetch_sync(urls, dest='sync')\nprint(results.ok)"
        ),
        nbformat.v4.new_code_cell("after = 1\nprint('after', after)"),
        nbformat.v4.new_code_cell("print('last cell', after + 1)"),
    ]
    client = NotebookClient(
        nb, timeout=60, kernel_name="python3", store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )  # fmt: skip
    client.execute()
    assert [c.execution_count for c in nb.cells] == [1, 2, 3, 4]
    assert stdout(nb, 1).strip().endswith("True")
    assert stdout(nb, 3) == "last cell 2\n"
    state = widget_state(nb)
    for name in ("s0.bin", "s1.bin"):
        (bar,) = bar_for(state, name)
        assert bar["value"] == bar["max"] == 1_000_000
        assert bar["style"] == "success"
    # The kernel thread is busy in fetch_sync and could not handle a click: no Cancel button.
    (button,) = [m for m in state.values() if m["model_name"] == "ButtonModel"]
    layout = state[button["state"]["layout"].removeprefix("IPY_MODEL_")]
    assert layout["state"]["display"] == "none"


# -- kernel-level: message rate and interrupts ----------------------------------------------
@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """A fresh python3 kernel whose working directory is ``tmp_path``."""
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(kc: BlockingKernelClient, code: str, timeout: float = 60) -> tuple[str, list[Any]]:
    """Run ``code``; returns (stdout, every iopub message of the execution)."""
    messages: list[Any] = []
    reply = kc.execute_interactive(
        code, timeout=timeout, output_hook=messages.append, allow_stdin=False
    )
    assert reply["content"]["status"] == "ok", reply["content"]
    out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    return out, messages


SETUP = """
import nbdl
from nbdl.testing import LocalServer
server = LocalServer().start()
"""

LONG_DOWNLOAD = """
import time
urls = [server.url(f"/data/long-{i}.bin", size=4_000_000, rate=1_000_000) for i in range(16)]
started = time.monotonic()
results = await nbdl.fetch(urls, dest="long", tracker="notebook", max_workers=16)
print(results.ok, round(time.monotonic() - started, 2))
"""

MANY_FILES = """
import time
small = [server.url(f"/data/small-{i}.bin", size=50_000, rate=200_000) for i in range(300)]
started = time.monotonic()
results = await nbdl.fetch(small, dest="small", tracker="notebook", max_workers=16)
print(results.ok, round(time.monotonic() - started, 2))
"""


def worst_rate(times: list[float], window: float) -> float:
    """The most messages in any ``window`` seconds, per second."""
    return max(sum(1 for t in times if s <= t < s + window) for s in times) / window


@pytest.mark.parametrize("code", [LONG_DOWNLOAD, MANY_FILES], ids=["16-streams", "300-files"])
def test_widget_messages_stay_far_below_the_iopub_limit(
    kernel: tuple[KernelManager, BlockingKernelClient], code: str
) -> None:
    """A long batch sends < 100 widget messages/s, in any 1 s (updates) and 3 s (all) window."""
    _, kc = kernel
    execute(kc, SETUP)
    received: list[tuple[float, str]] = []
    messages: list[Any] = []

    def hook(msg: Any) -> None:
        messages.append(msg)
        if msg["msg_type"].startswith("comm_"):
            received.append((time.monotonic(), msg["msg_type"]))

    reply = kc.execute_interactive(code, timeout=120, output_hook=hook)
    assert reply["content"]["status"] == "ok", reply["content"]
    out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    ok, elapsed = out.split()
    assert ok == "True"
    assert float(elapsed) > 3, "long enough to measure a rate"
    updates = [t for t, kind in received if kind == "comm_msg"]
    everything = [t for t, _ in received]
    assert len(updates) > 20, "the display did update live"
    # Updates: the worst one-second window.  Everything, widget creation included: the worst
    # three-second window, which is how Jupyter averages its 1000 msgs/s limit.
    print(
        f"\nwidget messages in {elapsed} s: {len(updates)} updates "
        f"(worst 1 s: {worst_rate(updates, 1):.0f}/s), {len(everything)} in all "
        f"(worst 3 s: {worst_rate(everything, 3):.0f}/s, "
        f"average {len(everything) / float(elapsed):.0f}/s)"
    )
    assert worst_rate(updates, 1) < 100
    assert worst_rate(everything, 3) < 100


INTERRUPTED = """
tracker = nbdl.NotebookTracker()
url = server.url("/data/big.bin", size=20_000_000, rate=2_000_000)
await nbdl.fetch([url], dest="dl", tracker=tracker)
"""

AFTER_INTERRUPT = """
import json
from pathlib import Path
bar = tracker.bars[url]
print(json.dumps({
    "status": tracker.get(url).status.value,
    "style": bar.container.children[1].bar_style,
    "text": bar.container.children[2].value.replace("\\u2007", " "),
    "part": Path("dl/big.bin.part").stat().st_size,
    "final": Path("dl/big.bin").exists(),
}))
"""


def wait_for_part(path: Path, timeout: float = 30) -> None:
    """Block until ``path`` holds some bytes."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size > 0):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)


@pytest.mark.parametrize("call", ["await", "fetch_sync"])
def test_kernel_interrupt_cancels_the_downloads(
    kernel: tuple[KernelManager, BlockingKernelClient], tmp_path: Path, call: str
) -> None:
    """Interrupting the kernel cancels the batch: .part stays, no final file, bar 'cancelled'."""
    km, kc = kernel
    execute(kc, SETUP)
    code = INTERRUPTED
    if call == "fetch_sync":
        code = code.replace("await nbdl.fetch(", "nbdl.fetch_sync(")
    msg_id = kc.execute(code, stop_on_error=False)  # the next cell must not be aborted
    wait_for_part(tmp_path / "dl" / "big.bin.part")
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] in ("CancelledError", "KeyboardInterrupt")
    out, _ = execute(kc, AFTER_INTERRUPT)
    seen = json.loads(out)
    assert seen["status"] == "cancelled"
    assert seen["style"] == "warning"
    assert "cancelled" in seen["text"]
    assert seen["part"] > 0
    assert seen["final"] is False


CLICKABLE = """
tracker = nbdl.NotebookTracker()
url = server.url("/data/click.bin", size=20_000_000, rate=2_000_000)
print("button", tracker.cancel_button.model_id, flush=True)
await nbdl.fetch([url], dest="dl", tracker=tracker)
"""

AFTER_CLICK = """
status = tracker.get(url).status.value
print(status, tracker.cancel_button.description, Path("dl/click.bin").exists())
"""


def test_cancel_button_works_while_the_cell_awaits(
    kernel: tuple[KernelManager, BlockingKernelClient], tmp_path: Path
) -> None:
    """A click on Cancel (a comm message from the front end) cancels the awaiting cell."""
    _, kc = kernel
    execute(kc, SETUP + "from pathlib import Path")
    # stop_on_error=False: the cancelled cell must not make the kernel abort the next request.
    msg_id = kc.execute(CLICKABLE, stop_on_error=False)
    model_id = None
    while model_id is None:
        msg = kc.get_iopub_msg(timeout=30)
        text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        if text.startswith("button "):
            model_id = text.split()[1]
    wait_for_part(tmp_path / "dl" / "click.bin.part")
    click = {"comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}}
    kc.shell_channel.send(kc.session.msg("comm_msg", click))
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "CancelledError"
    out, _ = execute(kc, AFTER_CLICK)
    assert out.split() == ["cancelled", "Cancelled", "False"]


def test_text_display_without_ipywidgets(tmp_path: Path) -> None:
    """Without ipywidgets, 'auto' shows an updating text display and no 'IProgress' error."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import sys\nsys.modules['ipywidgets'] = None  # as if it were not installed\n" + SETUP
        ),
        nbformat.v4.new_code_cell(
            "results = await nbdl.fetch([server.url('/data/t.bin', size=300_000, rate=600_000),"
            " server.url('/data/missing.bin', fail='404')], dest='t')\nprint(results)"
        ),
        nbformat.v4.new_code_cell("print('tqdm.notebook' in sys.modules)"),
    ]
    client = NotebookClient(
        nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    assert errors(nb) == []
    shown = [o for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert len(shown) == 1, "displayed once, then updated in place"
    text = shown[0]["data"]["text/plain"]
    assert "1/2 files completed · 1 failed" in text
    assert "missing.bin" in text
    assert "HTTP 404 Not Found" in text
    everything = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "IProgress" not in everything
    assert stdout(nb, 2).strip() == "False"


def test_kernel_interrupt_does_not_cancel_a_background_job(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    """An interrupt stops the running cell; a job started earlier keeps going and completes."""
    km, kc = kernel
    execute(kc, SETUP + "import asyncio")
    execute(
        kc,
        "job = nbdl.start([server.url('/data/bg.bin', size=3_000_000, rate=2_000_000)], dest='bg')",
    )
    msg_id = kc.execute("await asyncio.sleep(30)", stop_on_error=False)
    time.sleep(0.5)
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "error"
    out, _ = execute(kc, "print(job.done())\nresults = await job\nprint(results.ok)")
    assert out.split() == ["False", "True"]
