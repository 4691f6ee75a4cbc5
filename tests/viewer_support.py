"""What the viewer tests share: the OHIF tarball (fetched from npm once into .cache/ when no
path is given), Debian's chromium, and skipping that turns into failing under CI."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from node.cli.viewer import REGISTRY, from_registry
from node.viewer_bundle import VERSION

CACHE = Path(__file__).resolve().parent.parent / ".cache"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def unavailable(why: str) -> None:
    """Skip locally; under CI (CI=true) the parts are installed, so their absence fails."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI is set but {why}")
    pytest.skip(why)


def ohif_tarball() -> Path:
    """$PACSMESH_OHIF_TARBALL, or the npm tarball cached in .cache/ (downloaded once)."""
    given = os.environ.get("PACSMESH_OHIF_TARBALL")
    if given:
        if not Path(given).is_file():
            unavailable(f"PACSMESH_OHIF_TARBALL={given} is no file")
        return Path(given)
    cached = CACHE / f"ohif-app-{VERSION}.tgz"
    if not cached.is_file():
        CACHE.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=CACHE, suffix=".part", delete=False) as tmp:
            part = Path(tmp.name)
        try:
            from_registry(REGISTRY, part)
            part.rename(cached)
        except (OSError, ValueError, KeyError) as exc:
            part.unlink(missing_ok=True)
            unavailable(f"the OHIF tarball is not cached and npm is unreachable ({exc}); "
                        "set PACSMESH_OHIF_TARBALL to an `npm pack @ohif/app@{VERSION}` file")
    return cached


def chromium() -> str:
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    return CHROMIUM if Path(CHROMIUM).is_file() else str(shutil.which("chromium"))
