"""Huge manifests on a Dask cluster: ``await nbdl.distributed.fetch(manifest, dest, client=c)``.

The manifest is cut into shards; each shard is one Dask task that runs nbdl's own engine on a
worker's event loop (one HTTP session per worker process).  Progress streams back to the usual
display, results merge in input order, and a shard's outcome is recorded in ``dest/.nbdl/shards``
so that a new run does only what is left.  Needs ``pip install 'nbdl[dask]'``.
"""

try:
    import distributed as _distributed  # noqa: F401  (imported for the clear error below)
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "nbdl.distributed needs dask.distributed: pip install 'nbdl[dask]' "
        f"(or pip install distributed); the import failed with: {exc}"
    ) from None

from ._client import DEFAULT_SHARD_SIZE, KEEP_ALL_UP_TO, fetch
from ._results import ClusterResults, ShardSummary

__all__ = ["DEFAULT_SHARD_SIZE", "KEEP_ALL_UP_TO", "ClusterResults", "ShardSummary", "fetch"]
