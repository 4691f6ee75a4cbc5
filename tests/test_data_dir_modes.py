"""The data dir is owner-only (issue 21, defect 4): names, IDs, the audit trail and token
digests live there. Real node processes and CLI calls, started under umask 022."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mesh_support import cli, wait_for
from tests.support import (
    NodeProcess,
    data_store_dir,
    dataset_bytes,
    getscu_instance,
    sop_instance_uid,
    storescu,
)

# Sent by storescu as it is on disk (a real image of pydicom-data).
CT = data_store_dir() / "MR2_UNCR.dcm"


@pytest.fixture(autouse=True)
def _loose_umask() -> Iterator[None]:
    """What a default shell has; children inherit it."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _open_to_others(data_dir: Path) -> list[str]:
    found = []
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(data_dir.parent)} {mode:o}")
    return found


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _objects(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "objects").glob("*/*.dcm"))


def test_a_new_node_writes_nothing_others_can_read(make_node, tmp_path: Path) -> None:
    node: NodeProcess = make_node().start()
    assert storescu(node, [CT]) == []
    node.stop()
    d = node.data_dir
    assert _mode(d) == 0o700
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        if (d / name).exists():  # -wal/-shm are gone after a clean close
            assert _mode(d / name) == 0o600, name
    assert _mode(d / "identity" / "node.key") == 0o600
    assert [_mode(p) for p in _objects(d)] == [0o600]
    assert _open_to_others(d) == []
    # Nothing lost: the instance comes back as sent.
    node.start()
    assert (d / "index.sqlite-wal").exists() and _mode(d / "index.sqlite-wal") == 0o600
    assert _mode(d / "index.sqlite-shm") == 0o600
    got = getscu_instance(node, tmp_path / "out", sop_instance_uid(CT))
    assert dataset_bytes(got) == dataset_bytes(_objects(d)[0])
    assert _open_to_others(d) == []


def test_an_open_data_dir_is_fixed_at_start(make_node, tmp_path: Path) -> None:
    node: NodeProcess = make_node().start()
    assert storescu(node, [CT]) == []
    node.stop()
    d = node.data_dir
    for path in [d, *d.rglob("*")]:  # what an older version left under umask 022
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    node.start()
    log = node.log()
    assert f"data dir {d} was open to other users; fixed: . 755 -> 700;" in log
    assert "; index.sqlite 644 -> 600" in log
    # At start: everything but the object files; those, by the scrub as it passes.
    assert all(not (_mode(p) & 0o077) for p in [d, d / "index.sqlite", d / "identity",
                                                 d / "identity" / "node.key",
                                                 d / "objects", d / "objects" / "00"])
    wait_for(lambda: _open_to_others(d) == [], timeout=60)
    assert "mode fixed (open to other users)" in node.log()
    got = getscu_instance(node, tmp_path / "out", sop_instance_uid(CT))
    assert dataset_bytes(got) == dataset_bytes(_objects(d)[0])


def test_cli_commands_that_write_the_data_dir_keep_it_owner_only(tmp_path: Path) -> None:
    d = tmp_path / "data"
    env = {**os.environ, "PACSMESH_ENCRYPT_AT_REST": "true"}
    imported = subprocess.run([sys.executable, "-m", "node.cli", "import", "--data-dir", str(d),
                               str(CT)], capture_output=True, text=True, timeout=60, env=env)
    assert imported.returncode == 0, imported.stderr
    assert _mode(d / "keys" / "at-rest.key") == 0o600
    assert cli("mesh", "init", "--data-dir", str(d), "--aet", "NODEA").returncode == 0
    assert cli("mesh", "invite", "--data-dir", str(d), "--no-seed").returncode == 0
    assert cli("token", "add", "--data-dir", str(d), "--role", "reader").returncode == 0
    delete = cli("delete", "--data-dir", str(d), "--study", "1.2.3", "--yes")
    assert delete.returncode == 0, delete.stderr
    assert _open_to_others(d) == []
    assert len(_objects(d)) == 1


def _other_group() -> grp.struct_group:
    """A group to share with that is not this user's own (root may use any)."""
    candidates = [g for g in grp.getgrall() if g.gr_gid != os.getgid()]
    if os.geteuid() != 0:
        candidates = [g for g in candidates if g.gr_gid in os.getgroups()]
    if not candidates:
        pytest.skip("this user is in no group but its own")
    return candidates[0]


def _shared_ok(data_dir: Path, gid: int) -> list[str]:
    """Paths that break the shared layout: others may read, or not the group's."""
    bad = []
    for path in [data_dir, *data_dir.rglob("*")]:
        st = path.lstat()
        mode, private = stat.S_IMODE(st.st_mode), path.relative_to(data_dir).parts[:1] in (
            ("identity",), ("keys",), ("mesh",))
        if mode & 0o007 or (private and mode & 0o070):
            bad.append(f"{path} {mode:o}")
        elif not private and path.is_dir() and (st.st_gid != gid or mode & 0o2070 != 0o2050):
            bad.append(f"{path} {mode:o} group {st.st_gid}")
        elif not private and path.is_file() and (st.st_gid != gid or mode & 0o070 != 0o040):
            bad.append(f"{path} {mode:o} group {st.st_gid}")
    return bad


def test_a_data_dir_shared_with_a_group(make_node, tmp_path: Path) -> None:
    group = _other_group()
    env = {**os.environ, "PACSMESH_DATA_DIR_GROUP": group.gr_name}
    node: NodeProcess = make_node(env=env).start()
    assert storescu(node, [CT]) == []
    d = node.data_dir
    assert _mode(d) == 0o2750 and d.stat().st_gid == group.gr_gid
    assert _mode(d / "index.sqlite") == 0o640 and _mode(d / "index.sqlite-wal") == 0o640
    assert [_mode(p) for p in _objects(d)] == [0o640]
    assert _mode(d / "identity" / "node.key") == 0o600
    assert _shared_ok(d, group.gr_gid) == []
    got = getscu_instance(node, tmp_path / "out", sop_instance_uid(CT))
    assert dataset_bytes(got) == dataset_bytes(_objects(d)[0])
    # Turned off, then on again for an existing data dir: fixed at start, objects by scrub.
    node.stop()
    node.env = None
    node.start()
    wait_for(lambda: _open_to_others(d) == [], timeout=60)  # and back, the same way
    node.stop()
    node.env = env
    node.start()
    wait_for(lambda: _shared_ok(d, group.gr_gid) == [], timeout=60)
    assert f"group {group.gr_gid}" in node.log()


def test_an_unknown_group_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "import", "--data-dir", str(tmp_path / "d"),
         str(CT)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PACSMESH_DATA_DIR_GROUP": "no-such-group-here"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pacsmesh: error: data_dir_group 'no-such-group-here': no such group")
    assert not (tmp_path / "d").exists()
