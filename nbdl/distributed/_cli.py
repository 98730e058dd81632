"""``nbdl fetch --scheduler tcp://host:8786``: the command line's way onto a Dask cluster."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distributed import Client

from .._cli_options import fetch_options
from .._models import FileConfig, Results
from .._tracker import Tracker
from ._client import fetch
from ._stream import Manifest

#: Seconds to wait for the scheduler before giving up with a clear message.
CONNECT_TIMEOUT = 30


class SchedulerUnreachable(Exception):
    """The scheduler did not answer: the command line prints one line and exits 2."""


def fetch_on_cluster(
    args: argparse.Namespace,
    items: Iterable[str | FileConfig] | None,
    headers: dict[str, str],
    tracker: Tracker,
) -> Results:
    """Run ``nbdl fetch``'s arguments on the cluster at ``args.scheduler``.

    ``items`` None: the single ``-i`` manifest is streamed from its file (never read whole).
    """
    manifest: Manifest = items if items is not None else Path(args.input[0])
    return asyncio.run(_run(args, manifest, headers, tracker))


async def _run(
    args: argparse.Namespace, manifest: Manifest, headers: dict[str, str], tracker: Tracker
) -> Results:
    untyped: Any = Client  # its constructor carries no annotations
    try:
        client = await untyped(args.scheduler, asynchronous=True, timeout=CONNECT_TIMEOUT)
    except (OSError, ValueError) as exc:  # distributed raises OSError on timeouts too
        raise SchedulerUnreachable(
            f"cannot reach the Dask scheduler at {args.scheduler}: {exc}"
        ) from None
    async with client:
        return await fetch(
            manifest,
            dest=Path(args.output),
            client=client,
            shard_size=args.shard_size,
            # --json prints a line per item, so every item's record is needed.
            keep="all" if args.json else "auto",
            **fetch_options(args, headers=headers, tracker=tracker),
        )
