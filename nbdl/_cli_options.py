"""What ``nbdl fetch``'s parsed arguments ask of the engine, on this machine or on a cluster.

The command line (``_cli``) and its Dask path (``distributed._cli``, for ``--scheduler``) both
import this; it imports neither, so the two read the same arguments the same way.
"""

from __future__ import annotations

import argparse
from typing import TypedDict

from ._tracker import Tracker


class FetchArgs(TypedDict):
    """The keyword options ``nbdl.fetch`` and ``nbdl.distributed.fetch`` both take."""

    max_workers: int
    tracker: Tracker
    retries: int
    timeout: float | None
    read_timeout: float | None
    overwrite: bool
    headers: dict[str, str]
    segments: int | None
    max_per_host: int | None


def fetch_options(
    args: argparse.Namespace, *, headers: dict[str, str], tracker: Tracker
) -> FetchArgs:
    """``nbdl fetch``'s engine options from its parsed ``args`` (``--header`` parsed already)."""
    return FetchArgs(
        max_workers=args.jobs,
        tracker=tracker,
        retries=args.retries,
        timeout=args.timeout,
        read_timeout=args.read_timeout,
        overwrite=args.overwrite,
        headers=headers,
        segments=args.segments,
        max_per_host=args.max_per_host,
    )
