"""Optional imports of libraries the node uses that the node has no use for.

pydicom imports ``requests`` (and with it urllib3 and charset_normalizer) at start-up,
only to download its own test files, which it can do through urllib too, and a node
never does at all: a sixth of what ``pacsmesh run`` imported before its DICOM port could
open (benchmarks/startup.py). Hidden from that one import, pydicom falls back to urllib;
``requests`` stays importable by everyone else, before and after.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

_WITHOUT_REQUESTS = "pydicom.data.download"


class _Loader(importlib.abc.Loader):
    def __init__(self, real: importlib.abc.Loader) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if "requests" in sys.modules:  # imported already: nothing left to save
            self.real.exec_module(module)
            return
        sys.modules["requests"] = None  # type: ignore[assignment]  # "import requests" fails
        try:
            self.real.exec_module(module)
        finally:
            del sys.modules["requests"]


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _WITHOUT_REQUESTS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Before pydicom is first imported (node/__init__.py); idempotent."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
