"""PACSmesh node: a complete, self-sufficient PACS (storage, index, DICOM, HTTP, CLI)."""

from __future__ import annotations

import functools

from node import lean_imports

lean_imports.install()  # first: before anything in the node imports pydicom


@functools.cache
def _version() -> str:
    # importlib.metadata walks every installed distribution: a cost paid when the version
    # is first asked for (the HTTP API, --version), not by every start-up.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pacsmesh")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
