"""The one way small files are replaced: whole or not at all, private, no temporary left."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from node.atomic_file import atomic_write


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_is_replaced_whole_with_the_mode_asked_for(tmp_path: Path) -> None:
    target = tmp_path / "roster.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    atomic_write(target, b"new" * 100_000)
    assert target.read_bytes() == b"new" * 100_000
    assert _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["roster.json"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "node.key"
    target.write_bytes(b"old key")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old key"
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]
