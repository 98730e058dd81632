"""nbdl: concurrent, resumable downloads for Jupyter notebooks and Python scripts."""

from typing import TYPE_CHECKING

from ._cache import cache_dir
from ._errors import (
    BatchConflictError,
    ChecksumMismatchError,
    ConnectionFailedError,
    DownloadError,
    DownloadTimeoutError,
    ErrorKind,
    ExtractionError,
    FileSystemError,
    HTTPStatusError,
    IncompleteBodyError,
    InvalidConfigError,
    ProcessingError,
    TooManyRedirectsError,
)
from ._fetch import fetch
from ._hooks import DownloadEvent, EventKind, Hooks
from ._jobs import DownloadJob, start
from ._manager import DownloadManager
from ._models import (
    DownloadInfo,
    DownloadStatus,
    ExtractLimits,
    FileConfig,
    PatchDownloadInfo,
    Results,
)
from ._processors import Extract, ProcessJob, Processor
from ._registry import Registry
from ._schedulers import PriorityScheduler, RoundRobinScheduler, Scheduler
from ._storage import FolderStorage, ObjectStorage, Storage, StoredObject
from ._sync import fetch_sync
from ._tracker import DownloadTracker, NullTracker, Tracker
from ._version import __version__
from ._worker import DownloadWorker, RetryPolicy

__all__ = [
    "BatchConflictError",
    "ChecksumMismatchError",
    "ConnectionFailedError",
    "DownloadError",
    "DownloadEvent",
    "DownloadInfo",
    "DownloadJob",
    "DownloadManager",
    "DownloadStatus",
    "DownloadTimeoutError",
    "DownloadTracker",
    "DownloadWorker",
    "ErrorKind",
    "EventKind",
    "Extract",
    "ExtractLimits",
    "ExtractionError",
    "FileConfig",
    "FileSystemError",
    "FolderStorage",
    "HTTPStatusError",
    "Hooks",
    "IncompleteBodyError",
    "InvalidConfigError",
    "LogTracker",
    "NotebookTracker",
    "NullTracker",
    "ObjectStorage",
    "PatchDownloadInfo",
    "PriorityScheduler",
    "ProcessJob",
    "ProcessingError",
    "Processor",
    "Registry",
    "Results",
    "RetryPolicy",
    "RichTracker",
    "RoundRobinScheduler",
    "Scheduler",
    "Storage",
    "StoredObject",
    "TooManyRedirectsError",
    "Tracker",
    "__version__",
    "cache_dir",
    "fetch",
    "fetch_sync",
    "serve",
    "start",
]

if TYPE_CHECKING:
    from ._notebook import NotebookTracker
    from ._rich import LogTracker, RichTracker
    from .service import serve

# Display trackers load on first use: `import nbdl` in a script must not import Rich or
# ipywidgets, and the engine never does; nor does it load the web service.
_LAZY = {
    "LogTracker": "._rich",
    "NotebookTracker": "._notebook",
    "RichTracker": "._rich",
    "serve": ".service",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbdl' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
