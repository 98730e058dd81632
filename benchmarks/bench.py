"""The nbdl benchmark suite: nbdl against curl, wget, aria2c and parfive on a local nginx.

Run it with ``make bench`` (which installs what it needs); see ``benchmarks/README.md`` for how
to read the table.  Every tool runs as its own process under ``/usr/bin/time -f %M`` (peak RSS),
tools are interleaved (A B C, A B C, ...) for ``--rounds`` rounds, and medians are reported.

    python benchmarks/bench.py [--rounds 3] [--only big,small,throttled,manifest,trackers]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
MIB = 1024 * 1024
BIG_SIZE = 1024 * MIB
THROTTLED_SIZE = 128 * MIB
SMALL_SIZE = 10 * 1024
SMALL_COUNT = 2000
#: The tracker cost is a few percent of a batch whose single runs vary by 10 % or more: it
#: needs more pairs than the other workloads to settle.
TRACKER_ROUNDS = 21
MANIFEST_COUNT = 10_000
RATE_LIMIT = "4m"
#: ext4 without a journal (this VM's root) steps over inodes deleted in the last 60 s (360 s while
#: their table block is dirty), one buffer lookup each, when it allocates new ones: right after a
#: suite deleted its ~100,000 files, every tool's file creations were 1.5-3x slower for minutes.
#: A suite waits that out.
QUIET_AFTER_CLEANUP = 360
#: The served files persist between suites: writing and deleting 1.1 GiB per suite only added to
#: what the disk was busy with when the first workload started.
CACHE = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "nbdl-bench")
TIME = "/usr/bin/time"

NGINX_CONF = """\
worker_processes 2;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        # Every /small/<name> is the same 10 KiB file: 10,000 names without 10,000 files.
        location /small/ {{ rewrite ^ /small.bin break; }}
    }}
    server {{
        listen 127.0.0.1:{throttled_port};
        root {root}/www;
        limit_rate {rate};
    }}
}}
"""


# -- running one command ------------------------------------------------------------------------
@dataclass
class Run:
    """One timed run of one tool."""

    seconds: float
    rss_mb: float | None
    ok: bool
    note: str = ""
    inner_seconds: float | None = None
    #: User-mode CPU seconds of nbdl's fetch() (its driver reports it): the tracker's own work,
    #: without the file system's kernel time that makes wall times of many small files noisy.
    inner_user: float | None = None


@dataclass
class Tool:
    """A client in one workload: how to run it and how to check what it wrote."""

    name: str
    command: Callable[[Path], list[str]]
    check: Callable[[Path], str | None]
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None


def timed(
    cmd: list[str], dest: Path, check: Callable[[Path], str | None], keep: Path | None = None
) -> Run:
    """Run ``cmd`` (writing into the empty folder ``dest``) under ``/usr/bin/time``.

    What it wrote is then deleted, or moved into ``keep`` (see ``run_workload``).
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        started = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-f", "%M", "-o", rss.name, *cmd],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=900,
        )
        seconds = time.perf_counter() - started
        text = Path(rss.name).read_text().strip().splitlines()
    rss_mb = int(text[-1]) / 1024 if text and text[-1].isdigit() else None
    inner = inner_user = None
    with contextlib.suppress(ValueError, IndexError, KeyError):
        line = json.loads(proc.stdout.strip().splitlines()[-1])
        inner = float(line["elapsed"])
        inner_user = float(line["user"])
    problem = check(dest) if proc.returncode == 0 else f"exit {proc.returncode}"
    note = problem or ""
    if problem:
        note += ": " + (proc.stderr.strip().splitlines() or [""])[-1][:200]
    if keep is not None and dest.is_dir():
        keep.mkdir(parents=True, exist_ok=True)
        dest.rename(keep / f"{dest.name}-{len(list(keep.iterdir()))}")
    else:
        shutil.rmtree(dest, ignore_errors=True)
    os.sync()
    return Run(seconds, rss_mb, problem is None, note, inner, inner_user)


def check_one(name: str, size: int) -> Callable[[Path], str | None]:
    def check(dest: Path) -> str | None:
        path = dest / name
        if not path.is_file():
            return f"{name} missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, not {size}"
        return None

    return check


def check_many(count: int, size: int) -> Callable[[Path], str | None]:
    def check(dest: Path) -> str | None:
        files = [p for p in dest.iterdir() if p.is_file() and p.suffix == ".bin"]
        if len(files) != count:
            return f"{len(files)} files, not {count}"
        bad = [p.name for p in files if p.stat().st_size != size]
        return f"{len(bad)} files of the wrong size" if bad else None

    return check


# -- the server -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def nginx(root: Path) -> Iterator[tuple[str, str]]:
    """Start nginx on two free ports; yields the plain and the throttled base URLs."""
    port, throttled_port = free_port(), free_port()
    for sub in ("tmp", "www"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            root=root, port=port, throttled_port=throttled_port, rate=RATE_LIMIT, user=user
        )
    )
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([binary, "-p", str(root), "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                socket.create_connection(("127.0.0.1", throttled_port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"nginx did not start: {err}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{throttled_port}"
    finally:
        proc.terminate()
        proc.wait(10)


def make_files(www: Path) -> None:
    block = os.urandom(MIB)
    for name, size in (("big.bin", BIG_SIZE), ("throttled.bin", THROTTLED_SIZE)):
        path = www / name
        if path.is_file() and path.stat().st_size == size:
            # Kept from an earlier suite: read it once, so that the first client of round 1
            # does not also pay for nginx reading it from the disk.
            with open(path, "rb") as fh:
                while fh.read(MIB):
                    pass
            continue
        with open(path, "wb") as fh:
            for _ in range(size // MIB):
                fh.write(block)
    (www / "small.bin").write_bytes(os.urandom(SMALL_SIZE))


# -- workloads ------------------------------------------------------------------------------------
def nbdl_cmd(*args: str) -> list[str]:
    return [PY, str(HERE / "run_nbdl.py"), *args]


def nbdl_many(dest: Path, url_list: str, tracker: str = "none") -> list[str]:
    """nbdl on a list of URLs, 16 at a time (the many-files workloads)."""
    return nbdl_cmd(
        "--dest",
        str(dest),
        "--workers",
        "16",
        "--per-host",
        "16",
        "--tracker",
        tracker,
        "--list",
        url_list,
    )


def parfive_cmd(*args: str) -> list[str]:
    return [PY, str(HERE / "run_parfive.py"), *args]


def run_workload(
    tools: list[Tool], rounds: int, scratch: Path, keep: Path | None = None, warmup: bool = False
) -> None:
    """Interleave the tools, rotating who goes first: A B C, B C A, C A B, ...

    With ``warmup``, each tool first runs once untimed: the first runs of a suite came after the
    disk's busiest minutes and with the page cache full of the previous workload's big files.

    The machine drifts within a workload, so a fixed order would hand one tool the same place
    in every round.  With ``keep``, the files of each run are kept there (deleted only when the
    suite ends): ext4 steps over every recently deleted inode when it allocates a new one
    (``recently_deleted`` in ``find_inode_bit``), so deleting 2000 files before each run made
    the next run's file creations 2-3x slower, for every tool, the more so the more runs came
    before it.  Users download into folders where thousands of files were not just deleted.
    """
    for round_no in range(-1 if warmup else 0, rounds):
        shift = round_no % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            if tool.skipped:
                continue
            dest = scratch / f"out-{tool.name}".replace(" ", "_")
            shutil.rmtree(dest, ignore_errors=True)
            run = timed(tool.command(dest), dest, tool.check, keep)
            label = "warm-up" if round_no < 0 else f"round {round_no + 1}"
            if round_no >= 0:
                tool.runs.append(run)
            flag = "" if run.ok else f"  FAILED {run.note}"
            rss = f"{run.rss_mb:.0f} MB" if run.rss_mb is not None else "?"
            print(
                f"    {label}: {tool.name:<22} {run.seconds:7.2f} s  {rss:>7}{flag}",
                flush=True,
            )


def median(tool: Tool) -> float | None:
    times = [r.seconds for r in tool.runs if r.ok]
    return statistics.median(times) if times and len(times) == len(tool.runs) else None


def peak_rss(tool: Tool) -> float | None:
    values = [r.rss_mb for r in tool.runs if r.rss_mb is not None]
    return max(values) if values else None


def write_list(path: Path, base: str, count: int) -> Path:
    path.write_text("".join(f"{base}/small/f{i:05d}.bin\n" for i in range(count)))
    return path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--tracker-rounds",
        type=int,
        default=TRACKER_ROUNDS,
        help="rounds of the tracker workload (at least --rounds)",
    )
    parser.add_argument("--only", default="big,small,throttled,manifest,trackers")
    parser.add_argument("--tools", default=None, help="comma list of tool names to keep")
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    parser.add_argument(
        "--no-wait", action="store_true", help="do not wait after a previous suite's cleanup"
    )
    args = parser.parse_args()
    stamp = Path(os.environ.get("BENCH_DIR") or tempfile.gettempdir()) / "nbdl-bench-cleanup"
    if not args.no_wait:
        wait_for_quiet_disk(stamp)
    only = set(args.only.split(","))
    keep = set(args.tools.split(",")) if args.tools else None

    work = Path(tempfile.mkdtemp(prefix="nbdl-bench-", dir=os.environ.get("BENCH_DIR")))
    www = CACHE / "www"
    www.mkdir(parents=True, exist_ok=True)
    (work / "www").symlink_to(www, target_is_directory=True)  # rmtree(work) keeps the target
    print(f"nbdl benchmarks in {work} ({os.cpu_count()} CPUs, {args.rounds} rounds)", flush=True)
    make_files(www)
    os.sync()  # the generated files must not be written back while clients are timed
    aria = ["aria2c", "--file-allocation=falloc", "--allow-overwrite=true"]
    aria += ["--auto-file-renaming=false", "--summary-interval=0", "--console-log-level=warn", "-q"]
    workloads: dict[str, dict[str, object]] = {}
    try:
        with nginx(work) as (base, slow):
            big = f"{base}/big.bin"
            throttled = f"{slow}/throttled.bin"
            small_list = write_list(work / "small.txt", base, SMALL_COUNT)
            manifest = write_list(work / "manifest.txt", base, MANIFEST_COUNT)
            plan: list[tuple[str, str, float, str, list[Tool]]] = []
            if "big" in only:
                check = check_one("big.bin", BIG_SIZE)
                plan.append(
                    (
                        "big",
                        "one 1 GiB file",
                        BIG_SIZE / 1e6,
                        "MB/s",
                        [
                            Tool("nbdl", lambda d: nbdl_cmd("--dest", str(d), big), check),
                            Tool("curl", lambda d: ["curl", "-sS", "-o", "big.bin", big], check),
                            Tool("aria2c -x1", lambda d: [*aria, "-x1", big], check),
                            Tool("wget", lambda d: ["wget", "-q", "-O", "big.bin", big], check),
                            Tool("parfive", lambda d: parfive_cmd("--dest", str(d), big), check),
                        ],
                    )
                )
            if "small" in only:
                check = check_many(SMALL_COUNT, SMALL_SIZE)
                lst = str(small_list)
                plan.append(
                    (
                        "small",
                        f"{SMALL_COUNT} x 10 KiB, 16 at a time",
                        SMALL_COUNT,
                        "files/s",
                        [
                            Tool(
                                "nbdl",
                                lambda d: nbdl_many(d, lst),
                                check,
                            ),
                            Tool("aria2c -j16", lambda d: [*aria, "-j16", "-i", lst], check),
                            Tool(
                                "parfive",
                                lambda d: parfive_cmd(
                                    "--dest", str(d), "--conns", "16", "--list", lst
                                ),
                                check,
                            ),
                        ],
                    )
                )
            if "throttled" in only:
                check = check_one("throttled.bin", THROTTLED_SIZE)
                plan.append(
                    (
                        "throttled",
                        f"one 128 MiB file, server caps each connection at {RATE_LIMIT}B/s",
                        THROTTLED_SIZE / 1e6,
                        "MB/s",
                        [
                            Tool(
                                "nbdl 16 segments",
                                lambda d: nbdl_cmd(
                                    "--dest",
                                    str(d),
                                    "--segments",
                                    "16",
                                    "--per-host",
                                    "16",
                                    throttled,
                                ),
                                check,
                            ),
                            Tool(
                                "aria2c -x16 -s16",
                                lambda d: [*aria, "-x16", "-s16", "-k1M", throttled],
                                check,
                            ),
                            Tool(
                                "parfive",
                                lambda d: parfive_cmd("--dest", str(d), throttled),
                                check,
                            ),
                        ],
                    )
                )
            if "manifest" in only:
                check = check_many(MANIFEST_COUNT, SMALL_SIZE)
                mf = str(manifest)
                plan.append(
                    (
                        "manifest",
                        f"{MANIFEST_COUNT:,} x 10 KiB manifest (peak RSS)",
                        MANIFEST_COUNT,
                        "files/s",
                        [
                            Tool(
                                "nbdl",
                                lambda d: nbdl_many(d, mf),
                                check,
                            ),
                        ],
                    )
                )
            if "trackers" in only:
                check = check_many(SMALL_COUNT, SMALL_SIZE)
                lst = str(small_list)
                tools = []
                for tracker in ("none", "rich", "notebook"):

                    def cmd(d: Path, tracker: str = tracker) -> list[str]:
                        return nbdl_many(d, lst, tracker)

                    tool = Tool(f"nbdl tracker={tracker}", cmd, check)
                    cls = {"rich": "RichTracker", "notebook": "NotebookTracker"}.get(tracker)
                    if cls and not has_nbdl_attr(cls):
                        tool.skipped = f"not available: nbdl.{cls} does not exist yet"
                    tools.append(tool)
                plan.append(
                    (
                        "trackers",
                        f"tracker cost, {SMALL_COUNT} x 10 KiB",
                        SMALL_COUNT,
                        "files/s",
                        tools,
                    )
                )

            # The many-files workloads go first. The 1 GiB runs free 25 GiB, and on a file
            # system mounted with `discard` (this VM's root is) the TRIMs behind those deletes
            # slowed file creation for minutes afterwards: 2000 files took nbdl 1.45 s right
            # after them and 1.0 s later in the same suite (aria2c: 2.1 s and ~1.8 s).
            order = ["small", "manifest", "trackers", "big", "throttled"]
            plan.sort(key=lambda entry: order.index(entry[0]))
            for key, title, amount, unit, tools in plan:
                if keep is not None:
                    tools = [t for t in tools if t.name in keep or t.name.startswith("nbdl")]
                print(f"\n== {title}", flush=True)
                for tool in tools:
                    if tool.skipped:
                        print(f"    {tool.name}: {tool.skipped}")
                rounds = {"manifest": 1, "trackers": max(args.rounds, args.tracker_rounds)}
                # Many-files runs keep their output (see run_workload); one 1 GiB file per run
                # would fill the disk and costs one inode, so those are deleted.
                many = key in ("small", "manifest", "trackers")
                run_workload(
                    tools,
                    rounds.get(key, args.rounds),
                    work,
                    work / "kept" if many else None,
                    warmup=key in ("small", "trackers"),
                )
                workloads[key] = {"title": title, "amount": amount, "unit": unit, "tools": tools}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        stamp.write_text(f"{time.time()}\n")

    report = summarize(workloads)
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    report["rounds"] = args.rounds
    report["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.write_text(json.dumps(report, indent=2))
    print(f"\nfigures written to {out}")
    return 0


def wait_for_quiet_disk(stamp: Path) -> None:
    """Sleep until QUIET_AFTER_CLEANUP seconds have passed since a suite deleted its files."""
    try:
        ended = float(stamp.read_text())
    except (OSError, ValueError):
        return
    left = ended + QUIET_AFTER_CLEANUP - time.time()
    if left > 0:
        print(
            f"waiting {left:.0f} s: the previous suite deleted its files "
            f"{time.time() - ended:.0f} s ago, and ext4 creates files slowly for minutes after "
            "(--no-wait skips this)",
            flush=True,
        )
        time.sleep(left)


def has_nbdl_attr(name: str) -> bool:
    proc = subprocess.run(
        [PY, "-c", f"import nbdl, sys; sys.exit(0 if hasattr(nbdl, {name!r}) else 1)"],
        capture_output=True,
    )
    return proc.returncode == 0


# -- the report -----------------------------------------------------------------------------------
def summarize(workloads: dict[str, dict[str, object]]) -> dict[str, object]:
    rows: list[dict[str, object]] = []
    medians: dict[tuple[str, str], float | None] = {}
    rates: dict[tuple[str, str], float | None] = {}
    for key, spec in workloads.items():
        tools: list[Tool] = spec["tools"]  # type: ignore[assignment]
        amount = float(spec["amount"])  # type: ignore[arg-type]
        nbdl_time = median(tools[0])
        for tool in tools:
            m = median(tool)
            medians[key, tool.name] = m
            rates[key, tool.name] = amount / m if m else None
            ratio = nbdl_time / m if (m and nbdl_time and tool is not tools[0]) else None
            rows.append(
                {
                    "workload": key,
                    "title": spec["title"],
                    "tool": tool.name,
                    "median_s": m,
                    "rate": rates[key, tool.name],
                    "unit": spec["unit"],
                    # > 1 means nbdl is faster than this tool (time of the tool / time of nbdl).
                    "nbdl_speedup": (1 / ratio) if ratio else None,
                    "peak_rss_mb": peak_rss(tool),
                    "skipped": tool.skipped,
                    "runs": [asdict(r) for r in tool.runs],
                }
            )

    def speed(key: str, tool: str) -> float | None:
        return rates.get((key, tool))

    def target(name: str, value: float | None, goal: float, text: str, above: bool = True) -> dict:
        met = None if value is None else (value >= goal if above else value < goal)
        return {"target": name, "value": value, "goal": goal, "rule": text, "met": met}

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    targets = [
        target(
            "1 GiB vs aria2c -x1",
            ratio(speed("big", "nbdl"), speed("big", "aria2c -x1")),
            1.0,
            "nbdl MB/s / aria2c -x1 MB/s >= 1.0",
        ),
        target(
            "1 GiB vs curl",
            ratio(speed("big", "nbdl"), speed("big", "curl")),
            0.6,
            "nbdl MB/s / curl MB/s >= 0.6",
        ),
        target(
            "2000 x 10 KiB vs aria2c -j16",
            ratio(speed("small", "nbdl"), speed("small", "aria2c -j16")),
            2.0,
            "nbdl files/s / aria2c -j16 files/s >= 2.0",
        ),
        target(
            "throttled vs aria2c -x16 -s16",
            ratio(speed("throttled", "nbdl 16 segments"), speed("throttled", "aria2c -x16 -s16")),
            0.9,
            "nbdl MB/s / aria2c MB/s >= 0.9",
        ),
    ]
    nbdl_rss = [
        r["peak_rss_mb"]
        for r in rows
        if str(r["tool"]).startswith("nbdl") and r["peak_rss_mb"] is not None
    ]
    targets.append(
        target(
            "peak RSS, every nbdl run",
            max(nbdl_rss) if nbdl_rss else None,
            100.0,
            "max peak RSS MB < 100",
            above=False,
        )
    )
    # Tracker cost: the fetch() time measured inside the driver (what the tracker adds while the
    # batch runs; the one-off import of Rich or ipywidgets, ~0.1 s, is in the wall-time rows),
    # as the median over rounds of each round's ratio to the NullTracker run of the same round:
    # the pairs cancel the drift of the machine between rounds.
    tracker_tools = tools_by_name(workloads, "trackers")
    base = tracker_tools.get("nbdl tracker=none")
    for tracker in ("rich", "notebook"):
        cost = paired_cost(tracker_tools.get(f"nbdl tracker={tracker}"), base, "inner_seconds")
        targets.append(
            target(
                f"tracker cost, {tracker}",
                cost,
                5.0,
                "% more fetch() time than NullTracker < 5",
                above=False,
            )
        )
    # The same pairs in user CPU time: the tracker's own work without the file system's kernel
    # time, which is most of the noise of a many-small-files run.
    tracker_cpu = {}
    for tracker in ("rich", "notebook"):
        value = paired_cost(tracker_tools.get(f"nbdl tracker={tracker}"), base, "inner_user")
        if value is not None:
            tracker_cpu[tracker] = value
    # nbdl's small-files batch without the ~0.25 s of Python start-up and imports: what a
    # notebook, where nbdl is imported already, sees (aria2c starts in milliseconds).
    inner = None
    nbdl_small = tools_by_name(workloads, "small").get("nbdl")
    if nbdl_small is not None and nbdl_small.runs:
        values = [r.inner_seconds for r in nbdl_small.runs if r.ok and r.inner_seconds]
        if len(values) == len(nbdl_small.runs):
            inner = statistics.median(values)
    aria_small = speed("small", "aria2c -j16")
    in_process = None
    if inner and aria_small:
        in_process = {
            "files_per_s": SMALL_COUNT / inner,
            "vs_aria2c": SMALL_COUNT / inner / aria_small,
        }
    return {
        "rows": rows,
        "targets": targets,
        "tracker_cpu": tracker_cpu,
        "small_in_process": in_process,
    }


def tools_by_name(workloads: dict[str, dict[str, object]], key: str) -> dict[str, Tool]:
    """The tools of workload ``key`` (none if it did not run), by name."""
    tools: list[Tool] = workloads.get(key, {}).get("tools", [])  # type: ignore[assignment]
    return {tool.name: tool for tool in tools}


def paired_cost(tool: Tool | None, base: Tool | None, measure: str) -> float | None:
    """Median over rounds of ``tool``'s extra ``measure`` over ``base`` in the same round, in %.

    None when a run failed, was skipped or did not report ``measure``.
    """
    if tool is None or base is None or tool.skipped or base.skipped:
        return None
    if not tool.runs or len(tool.runs) != len(base.runs):
        return None
    costs = []
    for run, ref in zip(tool.runs, base.runs, strict=True):
        value, ref_value = getattr(run, measure), getattr(ref, measure)
        if not (run.ok and ref.ok and value and ref_value):
            return None
        costs.append((value / ref_value - 1) * 100)
    return statistics.median(costs)


def print_table(report: dict[str, object]) -> None:
    rows: list[dict] = report["rows"]  # type: ignore[assignment]
    print()
    header = (
        f"{'workload':<10} {'tool':<22} {'median s':>9} {'rate':>16} {'nbdl x':>7} {'RSS MB':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        if row["skipped"]:
            print(f"{row['workload']:<10} {row['tool']:<22} {row['skipped']}")
            continue
        m = row["median_s"]
        rate = f"{row['rate']:,.0f} {row['unit']}" if row["rate"] else "failed"
        speedup = f"{row['nbdl_speedup']:.2f}" if row["nbdl_speedup"] else ""
        rss = f"{row['peak_rss_mb']:.0f}" if row["peak_rss_mb"] else "?"
        med = f"{m:.2f}" if m else "-"
        print(f"{row['workload']:<10} {row['tool']:<22} {med:>9} {rate:>16} {speedup:>7} {rss:>7}")
    print("\n'nbdl x' = the tool's median time / nbdl's median time (> 1: nbdl is faster)\n")
    for t in report["targets"]:  # type: ignore[attr-defined]
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        state = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        print(f"  {state:<12} {t['target']:<32} {value:>8}   ({t['rule']})")
    small: dict[str, float] | None = report.get("small_in_process")  # type: ignore[assignment]
    if small:
        print(
            f"\n  (not a target) small, nbdl in-process (start-up excluded, as in a notebook): "
            f"{small['files_per_s']:,.0f} files/s = {small['vs_aria2c']:.2f}x aria2c -j16"
        )
    notes: dict[str, float] = report.get("tracker_cpu") or {}  # type: ignore[assignment]
    if notes:
        parts = ", ".join(f"{name} {value:+.1f} %" for name, value in notes.items())
        print(
            f"\n  (not a target) tracker cost in user CPU time of fetch(), paired medians: {parts}"
        )


if __name__ == "__main__":
    sys.exit(main())
