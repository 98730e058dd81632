"""nbdl: concurrent, resumable downloads for Jupyter notebooks and Python scripts."""

from ._errors import (
    ChecksumMismatchError,
    ConnectionFailedError,
    DownloadError,
    DownloadTimeoutError,
    ErrorKind,
    FileSystemError,
    HTTPStatusError,
    IncompleteBodyError,
    InvalidConfigError,
    TooManyRedirectsError,
)
from ._fetch import fetch
from ._manager import DownloadManager
from ._models import DownloadInfo, DownloadStatus, FileConfig, PatchDownloadInfo, Results
from ._tracker import DownloadTracker, NullTracker, Tracker
from ._version import __version__
from ._worker import DownloadWorker, RetryPolicy

__all__ = [
    "ChecksumMismatchError",
    "ConnectionFailedError",
    "DownloadError",
    "DownloadInfo",
    "DownloadManager",
    "DownloadStatus",
    "DownloadTimeoutError",
    "DownloadTracker",
    "DownloadWorker",
    "ErrorKind",
    "FileConfig",
    "FileSystemError",
    "HTTPStatusError",
    "IncompleteBodyError",
    "InvalidConfigError",
    "NullTracker",
    "PatchDownloadInfo",
    "Results",
    "RetryPolicy",
    "TooManyRedirectsError",
    "Tracker",
    "__version__",
    "fetch",
]
