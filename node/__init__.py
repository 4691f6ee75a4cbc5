"""PACSmesh node: a complete, self-sufficient PACS (storage, index, DICOM, HTTP, CLI)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pacsmesh")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
