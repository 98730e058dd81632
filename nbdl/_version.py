"""The package version, read once from the installed metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nbdl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

USER_AGENT = f"nbdl/{__version__}"
