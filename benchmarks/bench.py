"""The nbdl benchmark suite: nbdl against curl, wget, aria2c and parfive on a local nginx.

Run it with ``make bench`` (which installs what it needs); see ``benchmarks/README.md`` for how
to read the table.  Every tool runs as its own process under ``/usr/bin/time -f %M`` (peak RSS),
tools are interleaved (A B C, B C A, ...) for ``--rounds`` rounds, and medians are reported.

    python benchmarks/bench.py [--rounds 5] [--only small,small-tmpfs,https-small,latency,...]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
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
from typing import Any

HERE = Path(__file__).resolve().parent
PY = sys.executable
MIB = 1024 * 1024
BIG_SIZE = 1024 * MIB
THROTTLED_SIZE = 128 * MIB
SMALL_SIZE = 10 * 1024
SMALL_COUNT = 2000
#: Fresh-process runs of the tracker batches (their wall time, RSS and CPU in the table).  The
#: tracker cost itself comes from PAIR_ROUNDS warm pairs in one process (``tracker_pairs.py``):
#: single runs vary by 10-20 %, and 24 fresh-process pairs put the same engine's Rich tracker at
#: -1.6 % in one suite and +10.8 % in the next.
TRACKER_ROUNDS = 10
#: Rounds of ``tracker_pairs.py``: three 60-round runs of one engine gave medians within 1.5 %.
PAIR_ROUNDS = 60
#: The 1 GiB rows are mostly page-cache writes, and on this VM those cost 0.2 s or 3 s of system
#: time per GiB depending on whether the host took the freed memory back since the last run
#: (free page reporting; see benchmarks/README.md): a median needs more rounds to stand.  Ten
#: rounds of their five tools run every tool right after every other one twice.
BIG_ROUNDS = 10
MANIFEST_COUNT = 10_000
RATE_LIMIT = "4m"
#: What the latency server waits before every small response (a distant CDN's round trip).
LATENCY = 0.02
#: ext4 without a journal (this VM's root) steps over inodes deleted in the last 60 s (360 s while
#: their table block is dirty), one buffer lookup each, when it allocates new ones: right after a
#: suite deleted its ~100,000 files, every tool's file creations were 1.5-3x slower for minutes.
#: A suite waits that out.
QUIET_AFTER_CLEANUP = 360
#: The served files persist between suites: writing and deleting 1.1 GiB per suite only added to
#: what the disk was busy with when the first workload started.
CACHE = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "nbdl-bench")
TIME = "/usr/bin/time"
#: Where ``small-tmpfs`` writes: the engine's own cost without ext4's.
TMPFS = Path(os.environ.get("BENCH_TMPFS") or "/dev/shm")
#: Workloads written to TMPFS.  The tracker cost is CPU time, a few percent of a batch; on ext4
#: the disk's own drift from one run to the next (10 % and more) buried it: one suite measured
#: the Rich tracker at +8.8 % of wall time while a quiet in-process A/B on tmpfs gave +3-4 %.
TMPFS_WORKLOADS = ("small-tmpfs", "trackers")
ECHO_MODULE_DIRS = ("/usr/share/nginx/modules", "/usr/lib/nginx/modules")
#: Run order. The many-files workloads go first: the 1 GiB runs free 25 GiB, and on a file
#: system mounted with `discard` (this VM's root is) the TRIMs behind those deletes slowed file
#: creation for minutes afterwards (2000 files took nbdl 1.45 s right after them and 1.0 s later
#: in the same suite; aria2c: 2.1 s and ~1.8 s).
WORKLOADS = (
    "small",
    "small-tmpfs",
    "https-small",
    "latency",
    "manifest",
    "trackers",
    "big",
    "https-big",
    "throttled",
)
#: Many-files workloads: one warm-up run per tool, outputs kept until the suite ends.
WARM_UP = ("small", "small-tmpfs", "https-small", "latency", "trackers")
MANY_FILES = (*WARM_UP, "manifest")
#: Options that would switch certificate checks off; no command of the suite may carry one.
INSECURE = ("-k", "--insecure", "--no-check-certificate", "--check-certificate=false")
#: Variables that point a client at other trusted certificates: cleared for the probe that
#: shows each client refuses the bench's server without the bench's CA.
CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE")

NGINX_CONF = """\
{load_module}
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
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        root {root}/www;
        ssl_certificate {root}/server.pem;
        ssl_certificate_key {root}/server.pem;
        # Clients that resume TLS sessions (IDs or tickets) may: real servers allow it.
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        location /small/ {{ rewrite ^ /small.bin break; }}
    }}
{latency_server}
}}
"""

#: The echo module's echo_sleep waits without holding a worker; echo_exec then hands the request
#: to an internal location, so the body is nginx's static file (Content-Length, ETag) as above.
LATENCY_SERVER = """\
    server {{
        listen 127.0.0.1:{latency_port};
        root {root}/www;
        location /small/ {{ echo_sleep {latency}; echo_exec /s.bin; }}
        location = /s.bin {{ internal; rewrite ^ /small.bin break; }}
    }}"""


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
    #: The whole process's CPU seconds, user and system (``/usr/bin/time``).  The system time of
    #: the 1 GiB rows is mostly page-cache writes, and on this VM it varies 3x from run to run
    #: for every tool (see benchmarks/README.md): it shows when a wall time is the kernel's.
    user_s: float | None = None
    sys_s: float | None = None
    #: Minor page faults of the process: a client whose buffers glibc trims and faults in again
    #: pays for it in system time (see nbdl/_body.py).
    minor_faults: int | None = None


@dataclass
class Tool:
    """A client in one workload: how to run it and how to check what it wrote."""

    name: str
    command: Callable[[Path], list[str]]
    check: Callable[[Path], str | None]
    #: Added to the suite's environment (SSL_CERT_FILE for the aiohttp clients over HTTPS).
    env: dict[str, str] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class Workload:
    key: str
    title: str
    amount: float
    unit: str
    tools: list[Tool]
    #: The server every command of the workload must fetch from (``check_commands``).
    base: str
    skipped: str | None = None
    #: ``trackers``: the URL list the replay of the trackers' own work fetches (see
    #: ``replay_trackers``), and what it printed.
    replay_list: str | None = None
    replay: dict[str, float] | None = None
    #: ``trackers``: what ``tracker_pairs.py`` printed (every warm batch's seconds, by tracker).
    pairs: dict[str, Any] | None = None
    #: ``small-tmpfs``: the URL list of ``aiohttp_floor``, and its rounds' seconds.
    floor_list: str | None = None
    floor: list[float] | None = None


def timed(
    cmd: list[str],
    dest: Path,
    check: Callable[[Path], str | None],
    keep: Path | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """Run ``cmd`` (writing into the empty folder ``dest``) under ``/usr/bin/time``.

    What it wrote is then deleted, or moved into ``keep`` (see ``run_workload``).
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        started = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-f", "%M %U %S %R", "-o", rss.name, *cmd],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, **env} if env else None,
        )
        seconds = time.perf_counter() - started
        text = Path(rss.name).read_text().strip().splitlines()
    # The last line: a failing command's "Command exited with non-zero status" comes before it.
    fields = text[-1].split() if text else []
    rss_mb = user_s = sys_s = faults = None
    with contextlib.suppress(ValueError, IndexError):
        rss_mb, user_s, sys_s = int(fields[0]) / 1024, float(fields[1]), float(fields[2])
        faults = int(fields[3])
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
    return Run(seconds, rss_mb, problem is None, note, inner, inner_user, user_s, sys_s, faults)


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
@dataclass(frozen=True)
class Servers:
    """Base URLs of the servers of one suite."""

    plain: str
    throttled: str
    tls: str
    #: None when nginx has no echo module; ``latency_note`` says why.
    latency: str | None
    latency_note: str
    ca: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def echo_module() -> Path | None:
    for folder in ECHO_MODULE_DIRS:
        path = Path(folder) / "ngx_http_echo_module.so"
        if path.is_file():
            return path
    return None


def make_certificates(root: Path) -> Path:
    """A CA of this suite and nginx's certificate for 127.0.0.1 and localhost; returns the CA."""
    try:
        import trustme
    except ImportError:
        raise SystemExit(
            "the HTTPS workloads need trustme: pip install -e '.[bench]' (make bench does)"
        ) from None
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
    return root / "ca.pem"


@contextlib.contextmanager
def nginx(root: Path) -> Iterator[Servers]:
    """Start nginx: a plain, a throttled, a TLS and (with the echo module) a latency server."""
    ports = {name: free_port() for name in ("port", "throttled_port", "tls_port", "latency_port")}
    for sub in ("tmp", "www"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ca = make_certificates(root)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    module = echo_module()
    note = ""
    if module is None:
        note = (
            "not available: no ngx_http_echo_module.so in "
            f"{' or '.join(ECHO_MODULE_DIRS)} (Debian: libnginx-mod-http-echo)"
        )

    def write(with_latency: bool) -> None:
        fields = {"root": root, "rate": RATE_LIMIT, "latency": LATENCY, **ports}
        conf.write_text(
            NGINX_CONF.format(
                load_module=f"load_module {module};" if with_latency else "",
                latency_server=LATENCY_SERVER.format(**fields) if with_latency else "",
                user=user,
                **fields,
            )
        )

    write(module is not None)
    if module is not None:
        test = subprocess.run(
            [binary, "-t", "-q", "-p", str(root), "-c", str(conf)], capture_output=True, text=True
        )
        if test.returncode != 0:
            # A module built for another nginx: the other workloads still run.
            last = (test.stderr.strip().splitlines() or [""])[-1]
            note = f"not available: nginx refused {module}: {last[:160]}"
            module = None
            write(False)
    waited = [ports["port"], ports["throttled_port"], ports["tls_port"]]
    if module is not None:
        waited.append(ports["latency_port"])
    proc = subprocess.Popen([binary, "-p", str(root), "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                for port in waited:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"nginx did not start: {err}") from None
                time.sleep(0.05)
        yield Servers(
            plain=f"http://127.0.0.1:{ports['port']}",
            throttled=f"http://127.0.0.1:{ports['throttled_port']}",
            tls=f"https://127.0.0.1:{ports['tls_port']}",
            latency=f"http://127.0.0.1:{ports['latency_port']}" if module else None,
            latency_note=note,
            ca=ca,
        )
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


# -- the clients ----------------------------------------------------------------------------------
ARIA = [
    "aria2c",
    "--file-allocation=falloc",
    "--allow-overwrite=true",
    "--auto-file-renaming=false",
    "--summary-interval=0",
    "--console-log-level=warn",
    "-q",
]


def nbdl_cmd(*args: str) -> list[str]:
    return [PY, str(HERE / "run_nbdl.py"), *args]


def nbdl_many(dest: Path, url_list: str, tracker: str = "none") -> list[str]:
    """nbdl on a list of URLs, 16 at a time (the many-files workloads).

    No ``--per-host``: the engine's own default cap is part of what is measured.
    """
    return nbdl_cmd(
        "--dest", str(dest), "--workers", "16", "--tracker", tracker, "--list", url_list
    )


def parfive_cmd(*args: str) -> list[str]:
    return [PY, str(HERE / "run_parfive.py"), *args]


def trust(ca: Path | None) -> dict[str, str]:
    """The environment that makes the aiohttp clients trust ``ca``.

    aiohttp builds its default SSL context at import, and OpenSSL's default verify paths
    honour SSL_CERT_FILE: the same way a user points Python at a private CA.
    """
    return {"SSL_CERT_FILE": str(ca)} if ca else {}


def curl_list(path: Path, urls: list[str]) -> Path:
    """A ``curl -K`` config: one ``url``/``output`` pair per file."""
    lines = []
    for url in urls:
        lines.append(f'url = "{url}"\n')
        lines.append(f'output = "{url.rsplit("/", 1)[-1]}"\n')
    path.write_text("".join(lines))
    return path


def fetched_urls(cmd: list[str]) -> list[str]:
    """The URLs a command names, and the first URL of every list or ``-K`` file it reads."""
    urls = []
    for arg in cmd:
        if arg.startswith(("http://", "https://")):
            urls.append(arg)
        elif arg.endswith((".txt", ".curl")) and Path(arg).is_file():
            with open(arg, encoding="utf-8") as fh:
                first = fh.readline().strip()
            urls.append(first.removeprefix("url = ").strip('"'))
    return urls


def check_commands(workloads: list[Workload], ca: Path) -> None:
    """Every command fetches from its workload's server, none switches certificate checks off,
    and every HTTPS client is told the CA (the aiohttp ones through SSL_CERT_FILE)."""
    probe = Path("/nonexistent")
    for workload in workloads:
        for tool in workload.tools:
            cmd = tool.command(probe)
            urls = fetched_urls(cmd)
            if not urls or any(not url.startswith(workload.base + "/") for url in urls):
                raise SystemExit(f"{workload.key}/{tool.name} fetches {urls}, not {workload.base}")
            bad = [arg for arg in cmd if arg in INSECURE or arg.startswith("--insecure")]
            if bad:
                raise SystemExit(f"{workload.key}/{tool.name}: {bad} switches TLS checks off")
            told = str(ca) in " ".join(cmd) or tool.env.get("SSL_CERT_FILE") == str(ca)
            if workload.key.startswith("https") and not told:
                raise SystemExit(f"{workload.key}/{tool.name} is not given the bench's CA")


def tls_probe(work: Path, url: str, ca: Path) -> dict[str, str]:
    """Fetch one small file over TLS with every client, without and then with the CA.

    Returns the clients that did not behave: one that succeeds without the CA does not check
    certificates, and its HTTPS figures would not be comparable.
    """
    clean = {k: v for k, v in os.environ.items() if k not in CA_VARIABLES}
    name = url.rsplit("/", 1)[-1]
    clients: dict[str, Callable[[Path, Path | None], list[str]]] = {
        "nbdl": lambda d, ca: nbdl_cmd("--dest", str(d), "--retries", "0", url),
        "parfive": lambda d, ca: parfive_cmd("--dest", str(d), url),
        "curl": lambda d, ca: ["curl", "-sS", "-f", "-o", name, *cacert("--cacert", ca), url],
        "wget": lambda d, ca: [
            "wget",
            "-q",
            "--tries=1",
            "-O",
            name,
            *cacert("--ca-certificate=", ca),
            url,
        ],
        "aria2c": lambda d, ca: [*ARIA, "--max-tries=1", *cacert("--ca-certificate=", ca), url],
    }
    problems = {}
    check = check_one(name, SMALL_SIZE)
    for client, command in clients.items():
        for with_ca in (False, True):
            dest = work / f"probe-{client}-{with_ca}"
            dest.mkdir(parents=True)
            env = {**clean, **trust(ca if with_ca else None)}
            proc = subprocess.run(
                command(dest, ca if with_ca else None),
                cwd=dest,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            ok = proc.returncode == 0 and check(dest) is None
            shutil.rmtree(dest, ignore_errors=True)
            if ok != with_ca:
                last = (proc.stderr.strip().splitlines() or [""])[-1][:160]
                problems[client] = (
                    "fetched from the bench's server without its CA: it does not check certificates"
                    if ok
                    else f"failed with the bench's CA: {last}"
                )
                break
    return problems


def cacert(option: str, ca: Path | None) -> list[str]:
    if ca is None:
        return []
    return [f"{option}{ca}"] if option.endswith("=") else [option, str(ca)]


# -- running the workloads ------------------------------------------------------------------------
def run_workload(
    tools: list[Tool], rounds: int, scratch: Path, keep: Path | None = None, warmup: bool = False
) -> None:
    """Interleave the tools in a carry-over-balanced order (see ``balanced_orders``).

    With ``warmup``, each tool first runs once untimed: the first runs of a suite came after the
    disk's busiest minutes and with the page cache full of the previous workload's big files.

    The machine drifts within a workload, so a fixed order would hand one tool the same place
    in every round; and a run leaves the machine in a state the next run inherits, so a
    rotation (A B C, B C A, ...), which keeps who follows whom, would hand one tool the same
    predecessor in every round.  In the 1 GiB rows nbdl always followed parfive, whose 6.5 s
    run gave the host time to take back the memory freed before it (see ``BIG_ROUNDS``):
    nbdl's median system time was 1.74 s there against curl's 1.33 s, while side by side
    after one another they were equal.

    With ``keep``, the files of each run are kept there (deleted only when the suite ends):
    ext4 steps over every recently deleted inode when it allocates a new one
    (``recently_deleted`` in ``find_inode_bit``), so deleting 2000 files before each run made
    the next run's file creations 2-3x slower, for every tool, the more so the more runs came
    before it.  Users download into folders where thousands of files were not just deleted.
    """
    orders = balanced_orders(len(tools))
    for round_no in range(-1 if warmup else 0, rounds):
        for tool in (tools[i] for i in orders[round_no % len(orders)]):
            if tool.skipped:
                continue
            dest = scratch / f"out-{tool.name}".replace(" ", "_").replace(",", "")
            shutil.rmtree(dest, ignore_errors=True)
            run = timed(tool.command(dest), dest, tool.check, keep, tool.env)
            label = "warm-up" if round_no < 0 else f"round {round_no + 1}"
            if round_no >= 0:
                tool.runs.append(run)
            flag = "" if run.ok else f"  FAILED {run.note}"
            rss = f"{run.rss_mb:.0f} MB" if run.rss_mb is not None else "?"
            cpu = (
                f"user {run.user_s:.2f} sys {run.sys_s:.2f} faults {run.minor_faults}"
                if run.sys_s is not None
                else ""
            )
            print(
                f"    {label}: {tool.name:<30} {run.seconds:7.2f} s  {rss:>7}  {cpu}{flag}",
                flush=True,
            )


def driver_options(doc: str, rounds: int) -> tuple[list[str], Path, int]:
    """What every in-process driver is given (``--list``, ``--dest``, ``--rounds``, see
    ``json_driver``): its URLs, its scratch folder and its rounds.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--list", required=True, help="a file with one URL per line")
    parser.add_argument("--dest", required=True, help="a scratch folder")
    parser.add_argument("--rounds", type=int, default=rounds)
    args = parser.parse_args()
    with open(args.list, encoding="utf-8") as listing:
        urls = [line.strip() for line in listing if line.strip()]
    return urls, Path(args.dest), args.rounds


def json_driver(script: str, *args: str) -> dict[str, Any] | None:
    """Run one of the bench's in-process drivers; the JSON of its last line, or None.

    A driver that fails says why on stderr, which is printed.
    """
    proc = subprocess.run(
        [PY, str(HERE / script), *args], capture_output=True, text=True, timeout=1800
    )
    with contextlib.suppress(ValueError, IndexError):
        found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return found
    print(f"    {script} failed: {proc.stderr.strip()[-300:]}", flush=True)
    return None


def replay_trackers(url_list: str, scratch: Path) -> dict[str, Any] | None:
    """The trackers' own work, replayed from one batch's reports (``replay_trackers.py``).

    The ``trackers`` rows time whole batches, whose runs vary by more than a tracker costs; a
    replay times the tracker alone.
    """
    found = json_driver("replay_trackers.py", "--list", url_list, "--dest", str(scratch / "replay"))
    if found is not None:
        print(f"    replay of the trackers' own work: {found}", flush=True)
    return found


def tracker_pairs(url_list: str, scratch: Path, rounds: int) -> dict[str, Any] | None:
    """Warm batches with each tracker in one process, side by side (``tracker_pairs.py``)."""
    found = json_driver(
        "tracker_pairs.py",
        "--list",
        url_list,
        "--dest",
        str(scratch / "pairs"),
        "--rounds",
        str(rounds),
    )
    if found is not None:
        seconds: dict[str, list[float]] = found["seconds"]
        medians = {name: f"{statistics.median(v):.3f} s" for name, v in seconds.items()}
        print(f"    {rounds} warm rounds in one process, medians: {medians}", flush=True)
    return found


def aiohttp_floor(url_list: str, scratch: Path) -> list[float] | None:
    """The batch with aiohttp alone, in-process (``aiohttp_floor.py``): every round's seconds."""
    found = json_driver("aiohttp_floor.py", "--list", url_list, "--dest", str(scratch / "floor"))
    if found is None:
        return None
    seconds: list[float] = found["seconds"]
    print(f"    aiohttp alone, in-process: {' '.join(f'{x:.3f}' for x in seconds)} s", flush=True)
    return seconds


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of ``n`` tools in which each tool runs in each place, and right after each other
    tool, equally often: a Williams design (n orders for an even n, 2n for an odd n).

    The first order is 0, 1, n-1, 2, n-2, ...; the others add 1, 2, ... modulo n; for an odd
    n the reversed orders complete the balance.
    """
    first = [0]
    low, high = 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    orders = [[(i + k) % n for i in first] for k in range(n)]
    return orders + [order[::-1] for order in orders] if n % 2 else orders


def median(tool: Tool) -> float | None:
    times = [r.seconds for r in tool.runs if r.ok]
    return statistics.median(times) if times and len(times) == len(tool.runs) else None


def median_inner(tool: Tool) -> float | None:
    """Median in-process fetch() time (nbdl's driver reports it), None if any run lacks it."""
    values = [r.inner_seconds for r in tool.runs if r.ok and r.inner_seconds]
    return statistics.median(values) if values and len(values) == len(tool.runs) else None


def median_of(tool: Tool, measure: str) -> float | None:
    """Median of one of the runs' measures, None if a run lacks it."""
    values = [getattr(r, measure) for r in tool.runs]
    return statistics.median(values) if values and None not in values else None


def peak_rss(tool: Tool) -> float | None:
    values = [r.rss_mb for r in tool.runs if r.rss_mb is not None]
    return max(values) if values else None


def write_list(path: Path, base: str, count: int) -> Path:
    path.write_text("".join(f"{base}/small/f{i:05d}.bin\n" for i in range(count)))
    return path


def tmpfs_type(path: Path) -> str:
    """The file system type of the mount that holds ``path`` (from /proc/mounts)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            point = parts[1]
            inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, parts[2]
    return kind


def plan_workloads(
    only: set[str], work: Path, tmpfs: Path | None, servers: Servers
) -> list[Workload]:
    """The workloads of ``only``, in run order, with their tools."""
    ca = servers.ca
    cert = trust(ca)
    plan: list[Workload] = []
    many = check_many(SMALL_COUNT, SMALL_SIZE)
    small_list = str(write_list(work / "small.txt", servers.plain, SMALL_COUNT))

    def small_tools(lst: str, env: dict[str, str], aria_ca: list[str]) -> list[Tool]:
        return [
            Tool("nbdl", lambda d: nbdl_many(d, lst), many, env),
            Tool("aria2c -j16", lambda d: [*ARIA, *aria_ca, "-j16", "-i", lst], many),
            Tool(
                "parfive",
                lambda d: parfive_cmd("--dest", str(d), "--conns", "16", "--list", lst),
                many,
                env,
            ),
        ]

    def big_tools(url: str, env: dict[str, str], ca_path: Path | None) -> list[Tool]:
        check = check_one("big.bin", BIG_SIZE)
        return [
            Tool("nbdl", lambda d: nbdl_cmd("--dest", str(d), url), check, env),
            Tool(
                "curl",
                lambda d: ["curl", "-sS", *cacert("--cacert", ca_path), "-o", "big.bin", url],
                check,
            ),
            Tool(
                "aria2c -x1",
                lambda d: [*ARIA, *cacert("--ca-certificate=", ca_path), "-x1", url],
                check,
            ),
            Tool(
                "wget",
                lambda d: [
                    "wget",
                    "-q",
                    *cacert("--ca-certificate=", ca_path),
                    "-O",
                    "big.bin",
                    url,
                ],
                check,
            ),
            Tool("parfive", lambda d: parfive_cmd("--dest", str(d), url), check, env),
        ]

    if "small" in only:
        plan.append(
            Workload(
                "small",
                f"{SMALL_COUNT} x 10 KiB, 16 at a time, to {tmpfs_type(work)} ({work.parent})",
                SMALL_COUNT,
                "files/s",
                small_tools(small_list, {}, []),
                servers.plain,
            )
        )
    if "small-tmpfs" in only:
        workload = Workload(
            "small-tmpfs",
            f"{SMALL_COUNT} x 10 KiB, 16 at a time, to {tmpfs_type(TMPFS)} ({TMPFS})",
            SMALL_COUNT,
            "files/s",
            small_tools(small_list, {}, []),
            servers.plain,
            floor_list=small_list,
        )
        if tmpfs is None:
            workload.skipped = f"not available: cannot write to {TMPFS} (set BENCH_TMPFS)"
        plan.append(workload)

    def https_small_tools(lst: str, kfile: str) -> list[Tool]:
        tools = small_tools(lst, cert, [f"--ca-certificate={ca}"])
        tools.append(
            Tool(
                "curl --parallel 16",
                lambda d: [
                    "curl",
                    "-sS",
                    "--cacert",
                    str(ca),
                    "--parallel",
                    "--parallel-max",
                    "16",
                    "-K",
                    kfile,
                ],
                many,
            )
        )
        tools.append(
            Tool(
                "wget (one at a time)",
                lambda d: ["wget", "-q", f"--ca-certificate={ca}", "-i", lst],
                many,
            )
        )
        return tools

    def throttled_tools(url: str) -> list[Tool]:
        check = check_one("throttled.bin", THROTTLED_SIZE)

        def nbdl_throttled(name: str, *options: str) -> Tool:
            return Tool(name, lambda d: nbdl_cmd("--dest", str(d), *options, url), check)

        return [
            # What a user gets: no option at all.
            nbdl_throttled("nbdl default"),
            nbdl_throttled("nbdl default, per-host 16", "--per-host", "16"),
            nbdl_throttled("nbdl segments=4", "--segments", "4"),
            nbdl_throttled("nbdl segments=8", "--segments", "8"),
            nbdl_throttled("nbdl segments=16", "--segments", "16"),
            nbdl_throttled("nbdl segments=16, per-host 16", "--segments", "16", "--per-host", "16"),
            # -k1M: aria2c's default minimum split (20 MiB) would give 6 connections.
            Tool("aria2c -x16 -s16", lambda d: [*ARIA, "-x16", "-s16", "-k1M", url], check),
            Tool("parfive", lambda d: parfive_cmd("--dest", str(d), url), check),
        ]

    # Every tool list comes from a function call: a lambda here would see a later
    # workload's value of a reassigned local (wget once fetched the latency list that way).
    if "https-small" in only:
        urls = [f"{servers.tls}/small/f{i:05d}.bin" for i in range(SMALL_COUNT)]
        plan.append(
            Workload(
                "https-small",
                f"{SMALL_COUNT} x 10 KiB over HTTPS, 16 at a time (wget: one at a time)",
                SMALL_COUNT,
                "files/s",
                https_small_tools(
                    str(write_list(work / "https-small.txt", servers.tls, SMALL_COUNT)),
                    str(curl_list(work / "https-small.curl", urls)),
                ),
                servers.tls,
            )
        )
    if "latency" in only:
        base = servers.latency or servers.plain
        workload = Workload(
            "latency",
            f"{SMALL_COUNT} x 10 KiB, each answered after {LATENCY * 1000:.0f} ms, 16 at a time",
            SMALL_COUNT,
            "files/s",
            small_tools(str(write_list(work / "latency.txt", base, SMALL_COUNT)), {}, []),
            base,
        )
        if servers.latency is None:
            workload.skipped = servers.latency_note
        plan.append(workload)
    if "manifest" in only:
        mf = str(write_list(work / "manifest.txt", servers.plain, MANIFEST_COUNT))
        check = check_many(MANIFEST_COUNT, SMALL_SIZE)
        plan.append(
            Workload(
                "manifest",
                f"{MANIFEST_COUNT:,} x 10 KiB manifest (peak RSS)",
                MANIFEST_COUNT,
                "files/s",
                [Tool("nbdl", lambda d: nbdl_many(d, mf), check)],
                servers.plain,
            )
        )
    if "trackers" in only:
        tools = []
        for tracker in ("none", "rich", "notebook"):

            def cmd(d: Path, tracker: str = tracker) -> list[str]:
                return nbdl_many(d, small_list, tracker)

            tool = Tool(f"nbdl tracker={tracker}", cmd, many)
            cls = {"rich": "RichTracker", "notebook": "NotebookTracker"}.get(tracker)
            if cls and not has_nbdl_attr(cls):
                tool.skipped = f"not available: nbdl.{cls} does not exist yet"
            tools.append(tool)
        workload = Workload(
            "trackers",
            f"tracker cost, {SMALL_COUNT} x 10 KiB, to {tmpfs_type(TMPFS)} ({TMPFS})",
            SMALL_COUNT,
            "files/s",
            tools,
            servers.plain,
            replay_list=small_list,
        )
        if tmpfs is None:
            workload.skipped = f"not available: cannot write to {TMPFS} (set BENCH_TMPFS)"
        plan.append(workload)
    if "big" in only:
        plan.append(
            Workload(
                "big",
                "one 1 GiB file",
                BIG_SIZE / 1e6,
                "MB/s",
                big_tools(f"{servers.plain}/big.bin", {}, None),
                servers.plain,
            )
        )
    if "https-big" in only:
        plan.append(
            Workload(
                "https-big",
                "one 1 GiB file over HTTPS",
                BIG_SIZE / 1e6,
                "MB/s",
                big_tools(f"{servers.tls}/big.bin", cert, ca),
                servers.tls,
            )
        )
    if "throttled" in only:
        plan.append(
            Workload(
                "throttled",
                f"one 128 MiB file, server caps each connection at {RATE_LIMIT[:-1]} MiB/s",
                THROTTLED_SIZE / 1e6,
                "MB/s",
                throttled_tools(f"{servers.throttled}/throttled.bin"),
                servers.throttled,
            )
        )
    plan.sort(key=lambda w: WORKLOADS.index(w.key))
    return plan


# -- versions -------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """The versions a quoted figure depends on."""

    def output(cmd: list[str]) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return ""
        return (proc.stdout + proc.stderr).strip()

    def word(text: str, index: int) -> str:
        words = text.splitlines()[0].split() if text else []
        return words[index] if len(words) > index else "missing"

    found = {"python": platform.python_version()}
    for package in ("aiohttp", "parfive", "nbdl"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "missing"
    found["nginx"] = word(output(["nginx", "-v"]), 2).removeprefix("nginx/")
    found["aria2c"] = word(output(["aria2c", "--version"]), 2)
    found["curl"] = word(output(["curl", "--version"]), 1)
    found["wget"] = word(output(["wget", "--version"]), 2)
    commit = output(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"])
    if commit and " " not in commit:
        found["nbdl"] += f" ({commit})"
    return found


def header(when: str, found: dict[str, str]) -> str:
    names = ("python", "aiohttp", "nginx", "aria2c", "curl", "wget", "parfive", "nbdl")
    return f"{when} · " + ", ".join(f"{name} {found[name]}" for name in names)


# -- main -----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--tracker-rounds",
        type=int,
        default=TRACKER_ROUNDS,
        help="fresh-process rounds of the tracker workload (at least --rounds)",
    )
    parser.add_argument(
        "--pair-rounds",
        type=int,
        default=PAIR_ROUNDS,
        help="warm rounds in one process behind the tracker cost (tracker_pairs.py)",
    )
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma list of workloads")
    parser.add_argument("--tools", default=None, help="comma list of tool names to keep")
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    parser.add_argument(
        "--no-wait", action="store_true", help="do not wait after a previous suite's cleanup"
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)}; known: {', '.join(WORKLOADS)}")
    stamp = Path(os.environ.get("BENCH_DIR") or tempfile.gettempdir()) / "nbdl-bench-cleanup"
    if not args.no_wait:
        wait_for_quiet_disk(stamp)
    keep = set(args.tools.split(",")) if args.tools else None

    suite_started = time.monotonic()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    found = versions()
    work = Path(tempfile.mkdtemp(prefix="nbdl-bench-", dir=os.environ.get("BENCH_DIR")))
    tmpfs: Path | None = None
    if only & set(TMPFS_WORKLOADS):
        with contextlib.suppress(OSError):
            tmpfs = Path(tempfile.mkdtemp(prefix="nbdl-bench-", dir=TMPFS))
    www = CACHE / "www"
    www.mkdir(parents=True, exist_ok=True)
    (work / "www").symlink_to(www, target_is_directory=True)  # rmtree(work) keeps the target
    print(header(when, found), flush=True)
    print(f"nbdl benchmarks in {work} ({os.cpu_count()} CPUs, {args.rounds} rounds)", flush=True)
    make_files(www)
    os.sync()  # the generated files must not be written back while clients are timed
    done: list[Workload] = []
    try:
        with nginx(work) as servers:
            plan = plan_workloads(only, work, tmpfs, servers)
            check_commands(plan, servers.ca)
            if any(w.key.startswith("https") for w in plan):
                bad = tls_probe(work, f"{servers.tls}/small/probe.bin", servers.ca)
                for client, why in bad.items():
                    print(f"TLS check: {client} {why}; its HTTPS rows are left out", flush=True)
                for workload in plan:
                    for tool in workload.tools:
                        client = tool.name.split()[0]
                        if workload.key.startswith("https") and client in bad:
                            tool.skipped = f"left out: {bad[client]}"
                if not bad:
                    print(
                        "TLS check: every client refused the server without the bench's CA "
                        "and fetched from it with the CA",
                        flush=True,
                    )
            for workload in plan:
                tools = workload.tools
                if keep is not None:
                    tools = [t for t in tools if t.name in keep or t.name.startswith("nbdl")]
                    workload.tools = tools
                print(f"\n== {workload.key}: {workload.title}", flush=True)
                if workload.skipped:
                    print(f"    {workload.skipped}", flush=True)
                    done.append(workload)
                    continue
                for tool in tools:
                    if tool.skipped:
                        print(f"    {tool.name}: {tool.skipped}", flush=True)
                rounds = {
                    "manifest": 1,
                    "trackers": max(args.rounds, args.tracker_rounds),
                    "big": max(args.rounds, BIG_ROUNDS),
                    "https-big": max(args.rounds, BIG_ROUNDS),
                }
                scratch = tmpfs if workload.key in TMPFS_WORKLOADS and tmpfs else work
                # Many-files runs keep their output (see run_workload); one 1 GiB file per run
                # would fill the disk and costs one inode, so those are deleted.
                run_workload(
                    tools,
                    rounds.get(workload.key, args.rounds),
                    scratch,
                    scratch / "kept" if workload.key in MANY_FILES else None,
                    warmup=workload.key in WARM_UP,
                )
                if workload.replay_list is not None:
                    workload.replay = replay_trackers(workload.replay_list, scratch)
                    workload.pairs = tracker_pairs(workload.replay_list, scratch, args.pair_rounds)
                if workload.floor_list is not None:
                    workload.floor = aiohttp_floor(workload.floor_list, scratch)
                done.append(workload)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if tmpfs is not None:
            shutil.rmtree(tmpfs, ignore_errors=True)
        stamp.write_text(f"{time.time()}\n")

    report = summarize(done)
    report["when"] = when
    report["versions"] = found
    report["suite_seconds"] = round(time.monotonic() - suite_started, 1)
    print(f"\n{header(when, found)}")
    print(f"{os.cpu_count()} CPUs, {args.rounds} rounds, suite {report['suite_seconds']:.0f} s")
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    report["rounds"] = args.rounds
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
def target(
    name: str, value: float | None, goal: float, rule: str, op: str = ">="
) -> dict[str, object]:
    checks: dict[str, Callable[[float], bool]] = {
        ">=": lambda v: v >= goal,
        ">": lambda v: v > goal,
        "<": lambda v: v < goal,
        "<=": lambda v: v <= goal,
    }
    met = None if value is None else checks[op](value)
    return {"target": name, "value": value, "goal": goal, "rule": rule, "met": met}


def summarize(workloads: list[Workload]) -> dict[str, object]:
    rows: list[dict[str, object]] = []
    times: dict[tuple[str, str], float | None] = {}
    rates: dict[tuple[str, str], float | None] = {}
    inner: dict[tuple[str, str], float | None] = {}
    by_key = {w.key: w for w in workloads}
    for w in workloads:
        nbdl_time = median(w.tools[0]) if w.tools else None
        for tool in w.tools:
            m = median(tool)
            times[w.key, tool.name] = m
            rates[w.key, tool.name] = w.amount / m if m else None
            inner[w.key, tool.name] = median_inner(tool)
            ratio = nbdl_time / m if (m and nbdl_time and tool is not w.tools[0]) else None
            rows.append(
                {
                    "workload": w.key,
                    "title": w.title,
                    "tool": tool.name,
                    "median_s": m,
                    "median_in_process_s": inner[w.key, tool.name],
                    "rate": rates[w.key, tool.name],
                    "unit": w.unit,
                    # > 1 means the first nbdl row is faster than this tool (its time / nbdl's).
                    "nbdl_speedup": (1 / ratio) if ratio else None,
                    "peak_rss_mb": peak_rss(tool),
                    "median_user_s": median_of(tool, "user_s"),
                    "median_sys_s": median_of(tool, "sys_s"),
                    "skipped": w.skipped or tool.skipped,
                    "command": " ".join(tool.command(Path("DEST"))),
                    "env": tool.env,
                    "runs": [asdict(r) for r in tool.runs],
                }
            )

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    def vs(key: str, tool: str, other: str) -> float | None:
        """nbdl's speed over the other tool's (their median times' ratio)."""
        return ratio(rates.get((key, tool)), rates.get((key, other)))

    targets = [
        target(
            "small: vs aria2c -j16",
            vs("small", "nbdl", "aria2c -j16"),
            2.0,
            "nbdl files/s / aria2c -j16 files/s >= 2.0",
        ),
    ]
    # tmpfs: nbdl's fetch() time inside its driver (the engine, as a notebook sees it) against
    # aria2c's whole process (it starts in milliseconds).
    tmpfs_inner = inner.get(("small-tmpfs", "nbdl"))
    targets.append(
        target(
            "small-tmpfs: in-process vs aria2c",
            ratio(
                SMALL_COUNT / tmpfs_inner if tmpfs_inner else None,
                rates.get(("small-tmpfs", "aria2c -j16")),
            ),
            3.0,
            "nbdl in-process files/s / aria2c -j16 files/s >= 3.0",
        )
    )
    targets += [
        target(
            "https-small: vs aria2c -j16",
            vs("https-small", "nbdl", "aria2c -j16"),
            1.0,
            "nbdl files/s / aria2c -j16 files/s >= 1.0",
        ),
        target(
            "latency: vs aria2c -j16",
            vs("latency", "nbdl", "aria2c -j16"),
            1.5,
            "nbdl files/s / aria2c -j16 files/s >= 1.5",
        ),
        target(
            "big: vs aria2c -x1",
            vs("big", "nbdl", "aria2c -x1"),
            1.0,
            "nbdl MB/s / aria2c -x1 MB/s >= 1.0",
        ),
        target("big: vs curl", vs("big", "nbdl", "curl"), 0.9, "nbdl MB/s / curl MB/s >= 0.9"),
        target(
            "https-big: vs aria2c -x1",
            vs("https-big", "nbdl", "aria2c -x1"),
            1.0,
            "nbdl MB/s / aria2c -x1 MB/s >= 1.0",
        ),
        target(
            "https-big: vs curl",
            vs("https-big", "nbdl", "curl"),
            0.8,
            "nbdl MB/s / curl MB/s >= 0.8",
        ),
    ]
    explicit = [times.get(("throttled", f"nbdl segments={n}")) for n in (4, 8, 16)]
    best = min(explicit) if explicit and all(explicit) else None
    targets += [
        target(
            "throttled: default vs best segments=",
            ratio(times.get(("throttled", "nbdl default")), best),
            1.25,
            "nbdl default s / best of segments=4,8,16 s <= 1.25",
            "<=",
        ),
        target(
            "throttled: default+per-host 16 vs aria2c",
            vs("throttled", "nbdl default, per-host 16", "aria2c -x16 -s16"),
            1.0,
            "nbdl MB/s / aria2c -x16 -s16 MB/s > 1.0",
            ">",
        ),
        target(
            "throttled: segments=16+per-host 16",
            vs("throttled", "nbdl segments=16, per-host 16", "aria2c -x16 -s16"),
            0.9,
            "nbdl MB/s / aria2c -x16 -s16 MB/s >= 0.9",
        ),
    ]
    nbdl_rss = [
        float(r["peak_rss_mb"])  # type: ignore[arg-type]
        for r in rows
        if str(r["tool"]).startswith("nbdl") and r["peak_rss_mb"] is not None
    ]
    targets.append(
        target(
            "peak RSS, every nbdl run",
            max(nbdl_rss) if nbdl_rss else None,
            64.0,
            "max peak RSS MB < 64",
            "<",
        )
    )
    # Tracker cost: warm batches in one process, each tracker beside the NullTracker batch of the
    # same round (tracker_pairs.py): the median over rounds of the ratio, minus one.  The same
    # pairs from the fresh-process rows (wall and user CPU of fetch(), the driver's in-process
    # clock) are printed beside it, not a target: they vary by more than a tracker costs.
    trackers = by_key.get("trackers")
    pairs = trackers.pairs if trackers is not None else None
    for tracker in ("rich", "notebook"):
        cost = None
        if pairs is not None:
            seconds: dict[str, list[float]] = pairs["seconds"]
            cost = paired_median(seconds[tracker], seconds["none"])
        targets.append(
            target(
                f"tracker cost, {tracker}",
                cost,
                5.0,
                "% more fetch() time than NullTracker, warm pairs < 5",
                "<",
            )
        )
    tracker_tools = {t.name: t for t in trackers.tools} if trackers is not None else {}
    base = tracker_tools.get("nbdl tracker=none")
    tracker_fresh: dict[str, dict[str, float | None]] = {}
    for tracker in ("rich", "notebook"):
        with_tracker = tracker_tools.get(f"nbdl tracker={tracker}")
        wall = paired_cost(with_tracker, base, "inner_seconds")
        user = paired_cost(with_tracker, base, "inner_user")
        if wall is not None and user is not None:
            tracker_fresh[tracker] = {"wall": wall, "user": user}
    if pairs is not None:
        cpu: dict[str, list[float]] = pairs["user"]
        for tracker in ("rich", "notebook"):
            tracker_fresh.setdefault(tracker, {})["warm_user"] = paired_median(
                cpu[tracker], cpu["none"]
            )
    # nbdl's small-files batch on ext4 without the ~0.25 s of Python start-up and imports: what
    # a notebook, where nbdl is imported already, sees (aria2c starts in milliseconds).
    in_process = None
    small_inner = inner.get(("small", "nbdl"))
    aria_small = rates.get(("small", "aria2c -j16"))
    if small_inner and aria_small:
        in_process = {
            "files_per_s": SMALL_COUNT / small_inner,
            "vs_aria2c": SMALL_COUNT / small_inner / aria_small,
        }

    # The small-tmpfs batch with aiohttp alone (aiohttp_floor.py): no client built on aiohttp
    # goes below it, beside what 3x aria2c -j16 would need and what nbdl's fetch() took.
    floor = None
    tmpfs_workload = by_key.get("small-tmpfs")
    aria_tmpfs = rates.get(("small-tmpfs", "aria2c -j16"))
    if tmpfs_workload is not None and tmpfs_workload.floor and aria_tmpfs:
        floor = {
            "first_s": tmpfs_workload.floor[0],
            "warm_s": statistics.median(tmpfs_workload.floor[1:] or tmpfs_workload.floor),
            "needed_s": SMALL_COUNT / aria_tmpfs / 3,
            "nbdl_s": tmpfs_inner,
        }

    def ran(entry: dict[str, object]) -> bool:
        """Whether the workload a target is about ran in this suite (``--only``)."""
        name = str(entry["target"])
        key = name.split(":")[0] if ":" in name else None
        if name.startswith("tracker cost"):
            key = "trackers"
        return key is None or key in by_key

    # The replay: each tracker's own work beyond the records the manager keeps anyway, as a
    # share of the NullTracker batch's in-process median.
    tracker_replay = {}
    base_inner = inner.get(("trackers", "nbdl tracker=none"))
    if trackers is not None and trackers.replay and base_inner:
        plain = trackers.replay["plain_ms"]
        for tracker in ("rich", "notebook"):
            own = trackers.replay[f"{tracker}_ms"] - plain
            tracker_replay[tracker] = {"ms": own, "percent": own / 1000 / base_inner * 100}
    return {
        "rows": rows,
        "targets": [t for t in targets if ran(t)],
        "tracker_fresh": tracker_fresh,
        "tracker_replay": tracker_replay,
        "small_in_process": in_process,
        "aiohttp_floor": floor,
    }


def paired_median(values: list[float], bases: list[float]) -> float | None:
    """Median over rounds of each value's extra over the base of its round, in %."""
    if not values or len(values) != len(bases) or not all(bases):
        return None
    pairs = zip(values, bases, strict=True)
    return statistics.median((value / ref - 1) * 100 for value, ref in pairs)


def paired_cost(tool: Tool | None, base: Tool | None, measure: str) -> float | None:
    """Median over rounds of ``tool``'s extra ``measure`` over ``base`` in the same round, in %.

    None when a run failed, was skipped or did not report ``measure``.
    """
    if tool is None or base is None or tool.skipped or base.skipped:
        return None
    if not tool.runs or len(tool.runs) != len(base.runs):
        return None
    if not all(run.ok and getattr(run, measure) for run in (*tool.runs, *base.runs)):
        return None
    values = [getattr(run, measure) for run in tool.runs]
    return paired_median(values, [getattr(run, measure) for run in base.runs])


def print_table(report: dict[str, object]) -> None:
    rows: list[dict] = report["rows"]  # type: ignore[assignment]
    print()
    header = (
        f"{'workload':<12} {'tool':<30} {'median s':>9} {'in-proc s':>9} {'rate':>16} "
        f"{'nbdl x':>7} {'RSS MB':>7} {'user/sys s':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        if row["skipped"]:
            print(f"{row['workload']:<12} {row['tool']:<30} {row['skipped']}")
            continue
        m = row["median_s"]
        rate = f"{row['rate']:,.0f} {row['unit']}" if row["rate"] else "failed"
        speedup = f"{row['nbdl_speedup']:.2f}" if row["nbdl_speedup"] else ""
        rss = f"{row['peak_rss_mb']:.0f}" if row["peak_rss_mb"] else "?"
        med = f"{m:.2f}" if m else "-"
        inner = row["median_in_process_s"]
        in_proc = f"{inner:.2f}" if inner else ""
        user, system = row.get("median_user_s"), row.get("median_sys_s")
        cpu = f"{user:.2f}/{system:.2f}" if user is not None and system is not None else ""
        print(
            f"{row['workload']:<12} {row['tool']:<30} {med:>9} {in_proc:>9} {rate:>16} "
            f"{speedup:>7} {rss:>7} {cpu:>11}"
        )
    print(
        "\n'nbdl x' = the tool's median time / the workload's first nbdl row's median time "
        "(> 1: nbdl is faster)\n'in-proc s' = nbdl's fetch() inside its driver, without "
        "Python's start-up and imports\n'user/sys s' = the whole process's CPU seconds "
        "(medians)\n"
    )
    for t in report["targets"]:  # type: ignore[attr-defined]
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        state = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        print(f"  {state:<12} {t['target']:<40} {value:>8}   ({t['rule']})")
    small: dict[str, float] | None = report.get("small_in_process")  # type: ignore[assignment]
    if small:
        print(
            f"\n  (not a target) small (ext4), nbdl in-process (start-up excluded, as in a "
            f"notebook): {small['files_per_s']:,.0f} files/s = {small['vs_aria2c']:.2f}x "
            "aria2c -j16"
        )
    floor: dict[str, float | None] | None = report.get("aiohttp_floor")  # type: ignore[assignment]
    if floor:
        nbdl_s = floor["nbdl_s"]
        print(
            f"\n  (not a target) small-tmpfs with aiohttp alone (GET, read, write; 16 at a time; "
            f"aiohttp_floor.py): {floor['first_s']:.3f} s in a fresh process, "
            f"{floor['warm_s']:.3f} s warm; 3x aria2c -j16 needs {floor['needed_s']:.3f} s"
            + (f"; nbdl's fetch() took {nbdl_s:.3f} s" if nbdl_s else "")
        )
    fresh: dict[str, dict[str, float]] = report.get("tracker_fresh") or {}  # type: ignore[assignment]
    if fresh:
        parts = ", ".join(
            f"{name} "
            + ", ".join(
                f"{label} {value[key]:+.1f} %"
                for key, label in (
                    ("warm_user", "warm user CPU"),
                    ("wall", "fresh processes"),
                    ("user", "their user CPU"),
                )
                if value.get(key) is not None
            )
            for name, value in fresh.items()
        )
        print(f"\n  (not a target) tracker cost, other paired medians: {parts}")
    replayed: dict[str, dict[str, float]] = report.get("tracker_replay") or {}  # type: ignore[assignment]
    if replayed:
        parts = ", ".join(
            f"{name} {value['ms']:.1f} ms = {value['percent']:.1f} %"
            for name, value in replayed.items()
        )
        print(
            "\n  (not a target) the trackers' own work, replayed from one batch's reports "
            f"(medians of 15; % of the NullTracker batch's in-process median): {parts}"
        )


if __name__ == "__main__":
    sys.exit(main())
