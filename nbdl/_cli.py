"""The ``nbdl`` command line: ``nbdl fetch``, ``nbdl demo`` and ``nbdl serve``.

Exit status: 0 every file completed, 1 some failed, 2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn, TextIO

from ._cli_options import fetch_options
from ._errors import BatchConflictError, InvalidConfigError
from ._manifest import parse_manifest
from ._models import DownloadInfo, FileConfig, Results
from ._registry import Registry
from ._tracker import NullTracker, Tracker
from ._urls import redact_url
from ._version import __version__

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class UsageError(Exception):
    """Bad usage or input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block and exits; we want one line and our exit path.
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nbdl``."""
    parser = _Parser(
        prog="nbdl",
        description="Concurrent, resumable, verified downloads.",
        epilog="exit status: 0 all files completed, 1 some failed, 2 bad usage or input, "
        "130 interrupted (partial files are kept; run the same command again to resume)",
    )
    parser.add_argument("--version", action="version", version=f"nbdl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    fetch = commands.add_parser(
        "fetch",
        help="download URLs",
        description="Download URLs (and/or a manifest of them) into a folder.",
    )
    fetch.add_argument("urls", nargs="*", metavar="URL", help="URLs to download")
    fetch.add_argument("-o", "--output", default=".", metavar="DIR", help="folder (default: .)")
    fetch.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="LIST",
        help="a manifest: text (one URL per line, '#' comments, options filename= priority= "
        "checksum= mirrors=), CSV with a 'url' column, or a JSON list; '-' reads standard "
        "input; repeatable",
    )
    fetch.add_argument(
        "--base-url",
        metavar="URL",
        help="read the -i files as pooch registries ('name hash [url]' lines); entries "
        "without a URL of their own are fetched from URL/name, each verified by its hash",
    )
    fetch.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="URL",
        help="another base URL with the same registry files, tried when --base-url fails "
        "(repeatable)",
    )
    fetch.add_argument(
        "--extract",
        action="store_true",
        help="extract every downloaded archive (items that say extract=false excepted)",
    )
    fetch.add_argument("-j", "--jobs", type=int, default=3, metavar="N", help="files at once")
    fetch.add_argument("--retries", type=int, default=3, metavar="N", help="extra attempts")
    fetch.add_argument(
        "--timeout", type=float, metavar="S", help="total seconds allowed per download"
    )
    fetch.add_argument(
        "--read-timeout",
        type=float,
        default=60,
        metavar="S",
        help="seconds without a byte before an attempt is abandoned (default: 60)",
    )
    fetch.add_argument(
        "--segments",
        type=int,
        metavar="N",
        help="byte ranges fetched at once per large file (default: automatic; 1: never split)",
    )
    fetch.add_argument(
        "--max-per-host",
        type=int,
        metavar="N",
        help="connections open to one host at a time, segments included "
        "(default: 8, or --workers if more)",
    )
    fetch.add_argument(
        "--checksum", metavar="ALG:HEX", help="expected digest (only with exactly one URL)"
    )
    fetch.add_argument(
        "--overwrite", action="store_true", help="download again files that already exist"
    )
    fetch.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'K: V'",
        help="extra request header (repeatable)",
    )
    fetch.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786; needs "
        "nbdl[dask]): the list is split into shards that its workers download; -o must be a "
        "folder every worker sees at the same path",
    )
    fetch.add_argument(
        "--shard-size",
        type=int,
        default=10_000,
        metavar="N",
        help="items per shard (one Dask task) with --scheduler (default: 10000)",
    )
    fetch.add_argument(
        "-q", "--quiet", action="store_true", help="no progress; only failures, on stderr"
    )
    fetch.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per file on stdout (progress goes to stderr)",
    )

    demo = commands.add_parser(
        "demo",
        help="download a mix of files from an embedded local server (offline)",
        description="Start a local HTTP server and download a mix of files from it: large, "
        "small, slow, one flaky (succeeds on retry) and one missing (fails with 404, on "
        "purpose). Exits 0 when the results are exactly the expected ones.",
    )
    demo.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="keep the files in DIR (default: a temporary folder, removed afterwards)",
    )
    demo.add_argument("-j", "--jobs", type=int, default=6, metavar="N", help="files at once")
    _add_serve_parser(commands)
    return parser


def _add_serve_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the download service: a web page and a JSON API",
        description="Serve a web page and a JSON API (/api/v1) that download into a folder. "
        "Prints the URL to open (it carries the access token). Unfinished downloads resume "
        "when it starts again.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=8642, help="port (default: 8642; 0 picks a free one)"
    )
    serve.add_argument("-o", "--output", default=".", metavar="DIR", help="folder (default: .)")
    serve.add_argument("-j", "--jobs", type=int, default=3, metavar="N", help="files at once")
    serve.add_argument("--token", help="the access token (default: $NBDL_TOKEN, else a random one)")
    serve.add_argument(
        "--allow-private",
        action="store_true",
        help="when listening beyond loopback, still allow downloads from private addresses",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nbdl`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "fetch":
            return _fetch(args)
        if args.command == "demo":
            from ._demo import run_demo

            return run_demo(output=args.output, jobs=args.jobs)
        if args.command == "serve":
            return _serve(args)
        raise UsageError("a command is needed: 'nbdl fetch URL...' or 'nbdl demo'")
    except SystemExit as exc:  # --help and --version end here; callers of main() get a status
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except (UsageError, InvalidConfigError) as exc:
        print(f"nbdl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`nbdl ... | head`): stop quietly, and keep Python from
        # complaining about stdout again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "nbdl: interrupted; partial files are kept, run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def _fetch(args: argparse.Namespace) -> int:
    headers = dict(_header(text) for text in args.header)
    display: TextIO = sys.stderr if args.json else sys.stdout
    tracker = NullTracker() if args.quiet else terminal_display(display)
    if args.scheduler is not None:
        return _report(args, _fetch_on_cluster(args, headers, tracker))
    items = _items(args)
    from ._fetch import fetch

    # asyncio.run turns Ctrl-C into a cancel of fetch (partial files kept, the tracker closed)
    # and raises KeyboardInterrupt once that is done.
    options = fetch_options(args, headers=headers, tracker=tracker)
    results = asyncio.run(fetch(items, dest=Path(args.output), **options))
    return _report(args, results)


def _fetch_on_cluster(
    args: argparse.Namespace, headers: dict[str, str], tracker: Tracker
) -> Results:
    """``--scheduler``: the same download on a Dask cluster (see ``nbdl.distributed``)."""
    try:
        from .distributed._cli import SchedulerUnreachable, fetch_on_cluster
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    # One plain manifest file streams from disk (a huge list is never read whole); anything
    # else (URLs, several lists, registries) is read here as without --scheduler.
    streamed = (
        len(args.input) == 1
        and args.input[0] != "-"
        and not (args.urls or args.base_url or args.extract or args.checksum)
    )
    items = None if streamed else _items(args)
    try:
        return fetch_on_cluster(args, items, headers, tracker)
    except SchedulerUnreachable as exc:
        raise UsageError(str(exc)) from None


def _report(args: argparse.Namespace, results: Results) -> int:
    if args.json:
        for index, info in enumerate(results):
            print(json.dumps(result_record(index, info)), flush=True)
    if args.quiet:
        for info in results.failed:
            print(f"nbdl: failed: {info.filename}: {info.error}", file=sys.stderr)
    return EXIT_OK if results.ok else EXIT_FAILED


def _serve(args: argparse.Namespace) -> int:
    from .service import serve

    async def run() -> None:
        server = await serve(
            args.output,
            host=args.host,
            port=args.port,
            max_workers=args.jobs,
            token=args.token or os.environ.get("NBDL_TOKEN") or None,
            ssrf_guard=False if args.allow_private else None,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import gc
        import signal

        # This process only serves: what exists now (modules, the loaded queue) lives as long
        # as it does, and full collections walking it paused every answer for ~50 ms.
        gc.freeze()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            print(
                f"nbdl is serving {server.dest}; open this URL in a browser "
                f"(it carries the access token):\n\n    {server.url}\n\n"
                "Ctrl-C stops it; unfinished downloads resume at the next start.",
                flush=True,
            )
            await stop.wait()
        finally:
            await server.close()

    try:
        asyncio.run(run())
    except BatchConflictError as exc:  # another service serves this folder
        raise UsageError(str(exc)) from None
    except OSError as exc:  # the port is taken, the address is not ours, ...
        raise UsageError(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    return EXIT_OK


def terminal_display(stream: TextIO) -> Tracker:
    """A Rich display when ``stream`` is a terminal, plain log lines otherwise."""
    from ._rich import LogTracker, RichTracker

    if stream.isatty():
        from rich.console import Console

        return RichTracker(console=Console(file=stream))
    return LogTracker(file=stream)


def _items(args: argparse.Namespace) -> list[FileConfig]:
    if args.checksum is not None and (len(args.urls) != 1 or args.input):
        raise UsageError("--checksum needs exactly one URL (use a manifest for several)")
    if args.base_url is not None and not args.input:
        raise UsageError("--base-url needs -i REGISTRY (the files to fetch under it)")
    if args.mirror and args.base_url is None:
        raise UsageError("--mirror needs --base-url (it stands in for it)")
    items: list[FileConfig] = []
    for position, url in enumerate(args.urls):
        try:
            items.append(FileConfig(url, checksum=args.checksum))
        except ValueError as exc:
            raise UsageError(f"URL {position + 1}: {exc}") from None
    for name in args.input:
        items.extend(_read_manifest(name, args.base_url, args.mirror))
    if not items:
        raise UsageError("nothing to download: give URLs or -i LIST")
    if args.extract:
        # An item's own extract=false wins over the flag, as FileConfig fields win over fetch's.
        items = [replace(c, extract=True) if c.extract is None else c for c in items]
    return items


def _read_manifest(
    name: str, base_url: str | None = None, mirrors: Sequence[str] = ()
) -> list[FileConfig]:
    """The files listed in ``name`` ('-': stdin): a registry with ``base_url``, else a manifest."""
    kind = "manifest" if base_url is None else "registry"
    if name == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, source = Path(name).read_text(encoding="utf-8-sig"), name
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the {kind} {name}: {exc}") from None
    if base_url is None:
        return parse_manifest(text, source)
    return Registry.from_text(text, base_url, mirrors=mirrors, source=source).configs()


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"--header must look like 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def result_record(index: int, info: DownloadInfo) -> dict[str, object]:
    """One ``--json`` line: the result of the input item at ``index``."""
    return {
        "index": index,
        "url": redact_url(info.url),
        "path": str(info.path),
        "status": info.status.value,
        "bytes": info.bytes_downloaded,
        "total_bytes": info.total_bytes,
        "from_cache": info.from_cache,
        "attempts": info.attempts,
        "http_status": info.http_status,
        "error": info.error,
        "error_kind": info.error_kind.value if info.error_kind else None,
        "elapsed": None if info.elapsed is None else round(info.elapsed, 3),
    }
