"""The one way small files are replaced: whole or not at all, private, no temporary left."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest

from node import atomic_file
from node.atomic_file import GroupSync, atomic_write


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


def test_a_group_sync_covers_every_change_made_before_it_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight threads each create a name and sync while the first fsync is held until all
    eight have asked: one more fsync covers the seven, and no two ever run at once."""
    group = GroupSync(tmp_path)
    running, most, calls = 0, 0, 0
    lock = threading.Lock()
    real = atomic_file.fsync_dir

    def counting(path: Path) -> None:
        nonlocal running, most, calls
        with lock:
            running += 1
            calls += 1
            most = max(most, running)
            first = calls == 1
        deadline = time.monotonic() + 30
        while first and group._registered < 8 and time.monotonic() < deadline:
            time.sleep(0.001)  # a slow disk: the others arrive meanwhile
        real(path)
        with lock:
            running -= 1

    def store(n: int) -> None:
        (tmp_path / f"{n}.placed").touch()
        group.sync()

    monkeypatch.setattr(atomic_file, "fsync_dir", counting)
    threads = [threading.Thread(target=store, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert (most, calls) == (1, 2)


def test_a_failed_group_sync_fails_each_caller_that_relied_on_it(tmp_path: Path) -> None:
    group = GroupSync(tmp_path / "gone")
    with pytest.raises(FileNotFoundError):
        group.sync()
    with pytest.raises(FileNotFoundError):
        group.sync()
