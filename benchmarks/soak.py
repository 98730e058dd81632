"""``make soak``: nbdl processes killed and restarted on one shared folder, against a faulty server.

    python benchmarks/soak.py [--files 10000] [--seconds 300] [--seed 1] [--jobs 16]
                              [--share same|overlap] [--dir DIR] [--keep]

A local server (``soak_server.py``, 127.0.0.1 only) serves a seeded catalogue of files (mostly
small, some of 1-20 MiB, two of 64-96 MiB) and injects a random fault into some requests: resets,
503 with Retry-After, 500, Range ignored, trickles and stalls.  Two lanes of ``python -m nbdl
fetch`` processes download into ONE folder at the same time:

- lane A fetches the whole manifest and is killed with SIGKILL at random moments, then restarted;
  its runs alternate between the automatic split and ``--segments 8``;
- lane B fetches the same manifest (``--share overlap``: its last two thirds) with
  ``--segments 4``, and is never killed; it is restarted whenever it exits while lane A is not
  done, so the folder is shared the whole time.

Once every file is in place lane A is no longer killed; the run ends when a run of lane A ends
with every file completed (and B's current run has ended), or when ``--seconds`` runs out.  Then
it checks the folder: every file byte-exact (sha256); no partial file or wrong bytes ever seen at
a final path (each file is hashed when it first appears); no stray files (``*.part``, temporary
files, state records of complete files, anything else); no failure reported by a process; no
crash.  It prints the figures and a table of checks, and exits 0 only when every check passed.
See ``benchmarks/README.md`` ("Soak").
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from soak_server import MIB, SoakFile, SoakServer, catalogue, content

#: The processes' options: a short read timeout so that stalls are abandoned and retried, and
#: retries enough that a run of injected faults on one file cannot exhaust them.
NBDL_OPTIONS = ["--quiet", "--json", "--retries", "10", "--read-timeout", "2"]
#: Allowed in the folder besides the files: the state folder and the lock file processes share.
ALLOWED_EXTRA = {".nbdl", ".nbdl/lock"}
#: Failures the server's faults can cause once a file's retries are used up.  With the default
#: fault rates (~15 % of requests) eleven faults in a row on one file are very unlikely, so these
#: fail the soak too; a local kind (file, checksum, generic) is a bug whatever the rates.
NETWORK_KINDS = frozenset({"connection", "timeout", "http"})
#: Upper bound on processes started, whatever the time budget: the loop cannot run away.
MAX_STARTS = 5000
#: How long a lane waits before starting again after its process ended by itself.
RESTART_PAUSE = 0.5
SCAN_EVERY = 1.0
#: The processes' environment: nothing goes through a proxy, and they run in the work folder
#: (not in a checkout), so PYTHONPATH=/some/other/nbdl tests that nbdl instead.
_ENV = dict(os.environ, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")


@dataclass
class Failure:
    """A download a process reported as failed."""

    lane: str
    run: int
    name: str
    kind: str
    error: str


@dataclass
class Lane:
    """A sequence of nbdl processes with the same command line."""

    name: str
    manifest: Path
    #: Extra options of each run, in turn (run 1 the first, run 2 the second, ...).
    options: list[list[str]]
    killable: bool
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    kills: int = 0
    kill_at: float | None = None
    start_after: float = 0.0
    done: bool = False
    exits: collections.Counter[str] = field(default_factory=collections.Counter)
    log: Path | None = None


@dataclass
class Tally:
    """What the processes reported, and what the scans of the folder saw."""

    completed: int = 0
    already_there: int = 0
    failures: list[Failure] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    #: Final paths seen with a size other than the file's: (name, size seen, seconds into the run).
    partial_seen: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: Final paths of the right size but the wrong bytes when first seen: (what, seconds).
    wrong_seen: dict[str, tuple[str, float]] = field(default_factory=dict)


class Soak:
    """One soak run: the server, the lanes, the loop and the checks."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.dest = workdir / "downloads"
        self.logs = workdir / "logs"
        self.rng = random.Random(f"{args.seed}:kills")
        self.tally = Tally()
        started = time.perf_counter()
        self.files, bodies = catalogue(args.files, args.seed, args.big)
        self.total_bytes = sum(f.size for f in self.files)
        print(
            f"soak: {len(self.files):,} files, {self.total_bytes / MIB:,.1f} MiB "
            f"(seed {args.seed}, made in {time.perf_counter() - started:.1f} s); "
            f"folder {self.dest}",
            flush=True,
        )
        self.server = SoakServer(self.files, bodies, args.seed, args.fault_scale)
        self.lanes: list[Lane] = []
        self.started = 0.0
        self.complete = 0
        self.hashed: set[str] = set()
        #: Set once every file is in place: lane A then runs to its end unkilled.
        self.settling = False

    # -- setting up ----------------------------------------------------------------------------
    def _manifest(self, name: str, files: list[SoakFile]) -> Path:
        path = self.workdir / f"manifest-{name}.txt"
        lines = []
        for f in files:
            line = self.server.url(f.name)
            if self.args.checksums:
                line += f" checksum=sha256:{f.sha256}"
            lines.append(line)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def _lanes(self) -> list[Lane]:
        shared = self.files if self.args.share == "same" else self.files[len(self.files) // 3 :]
        return [
            # Lane A's runs alternate between the automatic split and 8 segments: a file one
            # run left as a single stream is resumed by a segmented run, and the other way round.
            Lane("A", self._manifest("A", self.files), [[], ["--segments", "8"]], killable=True),
            Lane("B", self._manifest("B", shared), [["--segments", "4"]], killable=False),
        ]

    # -- running -------------------------------------------------------------------------------
    def run(self) -> int:
        """Run the soak and the checks; the exit status."""
        where = subprocess.run(
            [sys.executable, "-c", "import nbdl; print(nbdl.__file__)"],
            env=_ENV,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
        )
        print(f"soak: nbdl under test: {Path(where.stdout.strip()).parent}", flush=True)
        self.dest.mkdir(parents=True)
        self.logs.mkdir()
        self.server.start()
        try:
            self.lanes = self._lanes()
            self.started = time.monotonic()
            within_budget = self._loop()
        finally:
            for lane in self.lanes:
                self._kill(lane, count=False)
            self.server.stop()
        wall = time.monotonic() - self.started
        checks = self._checks(within_budget)
        self._report(wall, checks)
        return 0 if all(ok for _, ok, _ in checks) else 1

    def _loop(self) -> bool:
        """Start, kill and restart processes until lane A is done; False if the budget ran out."""
        deadline = self.started + self.args.seconds
        lane_a, lane_b = self.lanes
        next_scan = next_line = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                print(f"soak: the time budget ({self.args.seconds} s) ran out", flush=True)
                return False
            for lane in self.lanes:
                self._step(lane, now, restart=not lane_a.done)
            if lane_a.done and lane_b.proc is None:
                self._scan()
                self._progress()
                return True
            if now >= next_scan:
                if self._scan() == len(self.files) and not self.settling:
                    # Lane A is done only when a run of it ends by itself: with short kill
                    # delays no run might ever get to the end of a long manifest.
                    self.settling = True
                    lane_a.kill_at = None
                    print(
                        "soak: every file is in place; lane A's runs are no longer killed",
                        flush=True,
                    )
                next_scan = now + SCAN_EVERY
            if now >= next_line:
                self._progress()
                next_line = now + self.args.progress_every
            if sum(lane.runs for lane in self.lanes) >= MAX_STARTS:
                print(f"soak: {MAX_STARTS} processes started; stopping", flush=True)
                return False
            time.sleep(0.05)

    def _step(self, lane: Lane, now: float, restart: bool) -> None:
        """Reap, kill or (re)start the process of ``lane``."""
        if lane.proc is not None:
            code = lane.proc.poll()
            if code is None:
                if lane.kill_at is not None and now >= lane.kill_at:
                    self._kill(lane)
                return
            self._ended(lane, code)
        if lane.done or not restart or now < lane.start_after:
            return
        self._start(lane)

    def _start(self, lane: Lane) -> None:
        lane.runs += 1
        log = self.logs / f"{lane.name}-{lane.runs:04d}"
        cmd = [
            sys.executable,
            "-m",
            "nbdl",
            "fetch",
            "-i",
            str(lane.manifest),
            "-o",
            str(self.dest),
            "-j",
            str(self.args.jobs),
            *NBDL_OPTIONS,
            *lane.options[(lane.runs - 1) % len(lane.options)],
        ]
        with open(f"{log}.out", "wb") as out, open(f"{log}.err", "wb") as err:
            lane.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=_ENV, cwd=self.workdir)
        lane.log = log
        if lane.killable and not self.settling:
            low, high = self.args.kill_after
            lane.kill_at = time.monotonic() + self.rng.uniform(low, high)

    def _kill(self, lane: Lane, count: bool = True) -> None:
        proc = lane.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        if count:
            lane.kills += 1
            lane.exits["killed"] += 1
        lane.proc = None
        lane.kill_at = None

    def _ended(self, lane: Lane, code: int) -> None:
        """Read what the process that just exited reported."""
        lane.proc = None
        lane.kill_at = None
        lane.exits[str(code)] += 1
        lane.start_after = time.monotonic() + RESTART_PAUSE
        assert lane.log is not None
        where = f"{lane.name} run {lane.runs}"
        err = Path(f"{lane.log}.err").read_text("utf-8", "replace")
        if "Traceback (most recent call last)" in err or code not in (0, 1):
            last = err.strip().splitlines()[-1:] or ["(no output)"]
            self.tally.crashes.append(f"{where}: exit status {code}: {last[0]}")
        failed = 0
        for line in Path(f"{lane.log}.out").read_text("utf-8", "replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                self.tally.crashes.append(f"{where}: not a JSON line on stdout: {line[:100]!r}")
                continue
            name = Path(record.get("path") or "?").name
            if record.get("status") == "completed":
                if record.get("from_cache"):
                    self.tally.already_there += 1
                else:
                    self.tally.completed += 1
            else:
                failed += 1
                self.tally.failures.append(
                    Failure(
                        lane.name,
                        lane.runs,
                        name,
                        str(record.get("error_kind") or record.get("status")),
                        str(record.get("error")),
                    )
                )
        if code == 0 and not failed and lane.name == "A":
            lane.done = True

    # -- watching ------------------------------------------------------------------------------
    def _scan(self) -> int:
        """How many files are complete at their final paths; notes any other size seen there."""
        complete = 0
        seconds = time.monotonic() - self.started
        for f in self.files:
            try:
                size = os.lstat(self.dest / f.name).st_size
            except FileNotFoundError:
                continue
            if size != f.size:
                if f.name not in self.tally.partial_seen:
                    self.tally.partial_seen[f.name] = (size, seconds)
                continue
            complete += 1
            if f.name not in self.hashed:
                # A final path must hold the right bytes from the moment it appears: hash each
                # file once when first seen, so a wrong file later replaced is caught too.
                self.hashed.add(f.name)
                with contextlib.suppress(OSError):
                    data = (self.dest / f.name).read_bytes()
                    if hashlib.sha256(data).hexdigest() != f.sha256:
                        detail = _difference(data, f, self.args.seed)
                        self.tally.wrong_seen[f.name] = (detail, seconds)
        self.complete = complete
        return complete

    def _progress(self) -> None:
        stats = self.server.stats()
        lanes = "  ".join(
            f"{lane.name}: run {lane.runs}"
            + (f", {lane.kills} kills" if lane.killable else "")
            + (" (done)" if lane.done else "")
            for lane in self.lanes
        )
        print(
            f"{time.monotonic() - self.started:6.1f}s  "
            f"files {self.complete:,}/{len(self.files):,} "
            f"({100 * self.complete / len(self.files):5.1f}%)  {lanes}  "
            f"served {stats.bytes_served / MIB:,.0f} MiB  "
            f"faults {sum(stats.faults.values()):,}  "
            f"failed downloads {len(self.tally.failures)}",
            flush=True,
        )

    # -- checking ------------------------------------------------------------------------------
    def _verify(self) -> dict[str, list[str]]:
        """Every file read back and hashed: the names in each kind of trouble."""
        trouble: dict[str, list[str]] = collections.defaultdict(list)
        for f in self.files:
            path = self.dest / f.name
            try:
                if path.is_symlink() or not path.is_file():
                    raise FileNotFoundError
                data = path.read_bytes()
            except FileNotFoundError:
                trouble["missing"].append(f.name)
                continue
            if len(data) < f.size:
                trouble["short (partial)"].append(f"{f.name} ({len(data):,} of {f.size:,} bytes)")
            elif len(data) > f.size:
                trouble["too long"].append(f"{f.name} ({len(data):,} for {f.size:,} bytes)")
            elif hashlib.sha256(data).hexdigest() != f.sha256:
                trouble["wrong bytes"].append(f"{f.name} ({_difference(data, f, self.args.seed)})")
        return trouble

    def _strays(self) -> list[str]:
        """Everything in the folder that is neither a file of the manifest nor allowed."""
        names = {f.name for f in self.files}
        by_record = {_record_name(self.server.url(f.name)): f.name for f in self.files}
        strays = []
        for root, dirs, files in os.walk(self.dest):
            for entry in sorted(dirs + files):
                rel = (Path(root) / entry).relative_to(self.dest).as_posix()
                if rel in names or rel in ALLOWED_EXTRA:
                    continue
                if os.path.isdir(Path(root) / entry) and not os.path.islink(Path(root) / entry):
                    strays.append(f"{rel}/ (a folder)")
                elif rel.endswith(".part"):
                    strays.append(f"{rel} (a partial file)")
                elif rel.startswith(".nbdl/") and entry in by_record:
                    strays.append(f"{rel} (the state record of {by_record[entry]})")
                elif rel.endswith(".tmp"):
                    strays.append(f"{rel} (a temporary file)")
                else:
                    strays.append(f"{rel} (unknown)")
        return strays

    def _checks(self, within_budget: bool) -> list[tuple[str, bool, list[str]]]:
        print("soak: verifying every file (sha256) ...", flush=True)
        trouble = self._verify()
        bad = [f"{kind}: {item}" for kind, items in trouble.items() for item in items]
        partial = [
            f"{name}: {size:,} bytes of {self._size(name):,}, at {at:.1f} s"
            for name, (size, at) in sorted(self.tally.partial_seen.items())
        ]
        wrong_seen = [
            f"{name}: {what}, at {at:.1f} s"
            for name, (what, at) in sorted(self.tally.wrong_seen.items())
        ]
        local = [_failure(f) for f in self.tally.failures if f.kind not in NETWORK_KINDS]
        network = [_failure(f) for f in self.tally.failures if f.kind in NETWORK_KINDS]
        return [
            ("finished within the time budget", within_budget, []),
            (
                f"every file byte-exact ({len(self.files) - len(bad):,}/{len(self.files):,})",
                not bad,
                bad,
            ),
            ("no partial file ever seen at a final path", not partial, partial),
            ("no wrong bytes ever seen at a final path", not wrong_seen, wrong_seen),
            ("no stray files (*.part, temporary files, records, other)", *_ok(self._strays())),
            ("no download failed for a local reason (file, checksum, ...)", not local, local),
            ("no download failed after all its retries (network kinds)", not network, network),
            ("no process crashed or exited oddly", *_ok(self.tally.crashes)),
        ]

    def _size(self, name: str) -> int:
        return next(f.size for f in self.files if f.name == name)

    def _report(self, wall: float, checks: list[tuple[str, bool, list[str]]]) -> None:
        stats = self.server.stats()
        lane_a, lane_b = self.lanes
        resent = sum(n - 1 for n in stats.whole_bodies.values() if n > 1)
        faults = ", ".join(f"{kind} {n:,}" for kind, n in stats.faults.most_common()) or "none"
        kinds = collections.Counter(f.kind for f in self.tally.failures)
        rows = [
            (
                "files",
                f"{len(self.files):,}",
                f"{self.total_bytes / MIB:,.1f} MiB, seed "
                f"{self.args.seed}, lane B shares {self.args.share}",
            ),
            (
                "downloads completed",
                f"{self.tally.completed:,}",
                "reported by the processes that ran to the end (killed ones report nothing)",
            ),
            (
                "found already there",
                f"{self.tally.already_there:,}",
                "files those processes found complete (summed over their runs)",
            ),
            (
                "processes started",
                f"{lane_a.runs + lane_b.runs:,}",
                f"A {lane_a.runs:,}, B {lane_b.runs:,}",
            ),
            ("kills survived", f"{lane_a.kills:,}", "SIGKILL of lane A at random moments"),
            ("exit statuses", "", _exits(self.lanes)),
            (
                "requests",
                f"{stats.requests:,}",
                f"{stats.resumes:,} resumes (Range: bytes=N-), "
                f"{stats.pieces:,} segment pieces (bytes=N-M)",
            ),
            ("faults injected", f"{sum(stats.faults.values()):,}", faults),
            (
                "bytes served",
                f"{stats.bytes_served / MIB:,.1f} MiB",
                f"{stats.bytes_served / max(self.total_bytes, 1):.2f}x the files' bytes",
            ),
            (
                "whole bodies re-sent",
                f"{resent:,}",
                f"200 answers sent in full more than once for one file "
                f"({sum(1 for n in stats.whole_bodies.values() if n > 1):,} files)",
            ),
            (
                "failed downloads",
                f"{len(self.tally.failures):,}",
                ", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "-",
            ),
            ("wall time", f"{wall:,.1f} s", ""),
        ]
        print()
        for label, value, note in rows:
            print(f"  {label:<22}{value:>12}  {note}")
        print()
        for label, ok, details in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {label}")
            for line in details[:10]:
                print(f"          {line}")
            if len(details) > 10:
                print(f"          ... and {len(details) - 10:,} more")
        print(flush=True)


def _failure(f: Failure) -> str:
    return f"{f.lane} run {f.run}: {f.name}: [{f.kind}] {f.error}"


def _ok(items: list[str]) -> tuple[bool, list[str]]:
    return not items, items


def _exits(lanes: list[Lane]) -> str:
    return "; ".join(
        f"{lane.name}: " + ", ".join(f"{code} x{n}" for code, n in sorted(lane.exits.items()))
        for lane in lanes
    )


def _record_name(url: str) -> str:
    # Mirrors nbdl/_state.py: the harness names leftover records without importing nbdl.
    return hashlib.sha256(url.encode()).hexdigest()[:32] + ".json"


def _difference(data: bytes, f: SoakFile, seed: int) -> str:
    """Where ``data`` differs from the file's bytes, and whether the wrong part is zeros."""
    expected = content(seed, f.name, f.size)
    blocks = [i for i in range(0, len(data), 4096) if data[i : i + 4096] != expected[i : i + 4096]]
    if not blocks:
        return "same bytes"
    first = next(i for i in range(blocks[0], len(data)) if data[i] != expected[i])
    last = max(
        i for i in range(blocks[-1], min(blocks[-1] + 4096, len(data))) if data[i] != expected[i]
    )
    wrong = data[first : last + 1]
    zeros = " (all zeros)" if not wrong.strip(b"\0") else ""
    return f"bytes {first:,}-{last:,} wrong{zeros}, {len(data):,} bytes in all"


def _range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition("-")
    try:
        pair = (float(low), float(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX seconds, got {text!r}") from None
    if not 0 < pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"expected 0 < MIN <= MAX, got {text!r}")
    return pair


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="files in the manifest")
    parser.add_argument("--big", type=int, default=2, help="files of 64-96 MiB among them")
    parser.add_argument("--seconds", type=float, default=300, help="time budget")
    parser.add_argument("--seed", type=int, default=1, help="seeds the files, faults and kills")
    parser.add_argument("--jobs", type=int, default=16, help="nbdl fetch -j")
    parser.add_argument(
        "--share",
        choices=("overlap", "same"),
        default="same",
        help="lane B's manifest: all of A's (default), or its last two thirds",
    )
    parser.add_argument(
        "--kill-after",
        type=_range,
        default=(0.3, 5.0),
        metavar="MIN-MAX",
        help="lane A is killed this many seconds after each start (uniform; default 0.3-5)",
    )
    parser.add_argument(
        "--fault-scale", type=float, default=1.0, help="multiplies every fault rate (0: none)"
    )
    parser.add_argument(
        "--checksums", action="store_true", help="give nbdl the sha256 of each file too"
    )
    parser.add_argument("--progress-every", type=float, default=5.0, metavar="S")
    parser.add_argument("--dir", help="work folder (default: a new one in $TMPDIR)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder even when every check passed"
    )
    args = parser.parse_args(argv)
    if args.files < 1 or args.jobs < 1 or args.seconds <= 0 or args.fault_scale < 0:
        parser.error("--files, --jobs and --seconds must be positive, --fault-scale >= 0")
    if args.dir:
        workdir = Path(args.dir)
        if workdir.exists() and any(workdir.iterdir()):
            parser.error(f"--dir {workdir} is not empty")
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="nbdl-soak-"))
    soak = Soak(args, workdir)
    try:
        status = soak.run()
    except KeyboardInterrupt:
        print(f"soak: interrupted; the work folder is kept: {workdir}", file=sys.stderr)
        return 130
    if status == 0 and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"soak: the work folder is kept: {workdir} (logs/ has every process's output)")
    print(f"soak: {'PASSED' if status == 0 else 'FAILED'}", flush=True)
    return status


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
