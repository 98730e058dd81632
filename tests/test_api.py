import subprocess
import sys
import textwrap

import nbdl

EXPECTED_ALL = [
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


def test_all_is_pinned_and_sorted() -> None:
    """The public names are exactly the documented ones, sorted, and all importable."""
    assert nbdl.__all__ == EXPECTED_ALL
    assert nbdl.__all__ == sorted(nbdl.__all__)
    for name in nbdl.__all__:
        assert getattr(nbdl, name) is not None


def test_exception_tree() -> None:
    """Every download error derives from DownloadError; bad input is a ValueError."""
    for cls in (
        nbdl.ConnectionFailedError,
        nbdl.IncompleteBodyError,
        nbdl.DownloadTimeoutError,
        nbdl.HTTPStatusError,
        nbdl.TooManyRedirectsError,
        nbdl.FileSystemError,
        nbdl.ChecksumMismatchError,
    ):
        assert issubclass(cls, nbdl.DownloadError)
    assert issubclass(nbdl.IncompleteBodyError, nbdl.ConnectionFailedError)
    assert issubclass(nbdl.TooManyRedirectsError, nbdl.HTTPStatusError)
    assert issubclass(nbdl.InvalidConfigError, ValueError)
    assert issubclass(nbdl.BatchConflictError, RuntimeError)
    assert not issubclass(nbdl.InvalidConfigError, nbdl.DownloadError)


def test_trackers_satisfy_the_protocol() -> None:
    """The shipped trackers implement the Tracker protocol."""
    for cls in (nbdl.NullTracker, nbdl.DownloadTracker, nbdl.LogTracker, nbdl.RichTracker):
        assert isinstance(cls(), nbdl.Tracker)
    assert issubclass(nbdl.NotebookTracker, nbdl.DownloadTracker)


def test_engine_imports_no_display_library() -> None:
    """`import nbdl` and a headless fetch never import ipywidgets or Rich."""
    code = textwrap.dedent(
        """
        import asyncio, sys, tempfile
        import nbdl
        from nbdl.testing import LocalServer
        with LocalServer() as server, tempfile.TemporaryDirectory() as d:
            asyncio.run(nbdl.fetch([server.url("/data/a")], d, tracker="none"))
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("ipywidgets", "rich")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
