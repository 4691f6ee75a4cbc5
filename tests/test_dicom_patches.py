"""The pynetdicom and pydicom patches: applied once, idempotent, and refused on versions
other than the pinned ones, with a message naming both libraries."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydicom import config as pydicom_config
from pynetdicom import _config, pdu_items
from pynetdicom import sop_class as known_classes

from node.dicom import patches
from node.dicom.patches import PINNED, UnsupportedLibrary, check_versions
from node.errors import LocalFailure

ROOT = Path(__file__).resolve().parent.parent


def test_installed_versions_are_the_pinned_ones() -> None:
    check_versions()


@pytest.mark.parametrize("installed", [
    {"pynetdicom": "3.1.0", "pydicom": "3.0.1"},
    {"pynetdicom": "3.0.4", "pydicom": "2.4.4"},
])
def test_another_minor_version_is_refused_naming_both(installed: dict[str, str]) -> None:
    with pytest.raises(UnsupportedLibrary) as exc:
        check_versions(installed)
    message = str(exc.value)
    assert "pynetdicom 3.0.x" in message and "pydicom 3.0.x" in message
    assert f"pynetdicom {installed['pynetdicom']}" in message
    assert f"pydicom {installed['pydicom']}" in message
    assert "\n" not in message  # one line: the node's start-up error
    assert isinstance(exc.value, LocalFailure)


def test_pinned_minor_versions_are_the_ones_pyproject_pins() -> None:
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, minor in PINNED.items():
        spec = next(p for p in pins if re.match(rf"{name}\b", p))
        major, low = minor.split(".")
        assert f">={minor}." in spec and f"<{major}.{int(low) + 1}" in spec, spec


def test_apply_is_idempotent_and_makes_every_change() -> None:
    patches.apply()
    patches.apply()
    assert getattr(pdu_items.set_uid, "memoized", False)
    assert pdu_items.set_uid.__wrapped__.__name__ == "set_uid"  # type: ignore[attr-defined]
    assert _config.LOG_HANDLER_LEVEL == "none" and not _config.LOG_REQUEST_IDENTIFIERS
    assert _config.STORE_SEND_CHUNKED_DATASET
    assert pydicom_config.settings.reading_validation_mode == pydicom_config.IGNORE
    for keyword in patches.RETIRED_IMAGE_STORAGE.values():
        assert hasattr(known_classes, keyword)


def test_a_missing_private_hook_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bare:
        pass

    monkeypatch.setattr(patches, "REACTOR_HOOKS", ((Bare, "_run_reactor"),))
    with pytest.raises(UnsupportedLibrary, match=r"Bare\._run_reactor"):
        patches.check_reactor_hooks()


def test_pynetdicom_timers_ignore_wall_clock_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wall clock stepped forward must not expire an association's idle timer."""
    import time

    from pynetdicom.timer import Timer

    patches.apply()
    timer = Timer(60)
    timer.start()
    monkeypatch.setattr(time, "time", lambda: 1e12)  # the wall clock, far ahead
    assert not timer.expired
    assert 59 < timer.remaining <= 60
