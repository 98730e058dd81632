"""The package version (also the build's: see ``[tool.hatch.version]`` in pyproject.toml)."""

__version__ = "0.1.0"

USER_AGENT = f"nbdl/{__version__}"
