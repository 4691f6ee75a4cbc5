"""Replication state that is never early: a three-member mesh (R = 2) on loopback.

A node's ``outbox_depth``/``under_replicated`` must not read 0/0 while an owner of a study
it received still lacks an instance, from the moment storescu returns; and ``pacsmesh
status --wait-replicated`` must succeed only when the owners really hold everything.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from replication.placement import owners
from tests.mesh_support import cli, invite, joiner, mesh_view, peer_states, wait_for
from tests.support import NodeProcess, storescu
from tests.test_faults import _uid, make_ct

INSTANCES = 30
REPETITIONS = 20


def _mesh(make_node: Any, founder: NodeProcess) -> dict[str, NodeProcess]:
    """Founder A, then B and C join: node id -> node, every member alive to A."""
    token = invite(founder, "--uses", "2")
    b = joiner(make_node, founder, "nodeb", token).start()
    c = joiner(make_node, founder, "nodec", token).start()
    nodes = [founder, b, c]
    wait_for(lambda: all(len(mesh_view(n)["members"]) == 3 for n in nodes), 40)
    wait_for(lambda: len(peer_states(founder)) == 2
             and set(peer_states(founder).values()) == {"alive"}, 40)
    # The founder's own instance, stored when it was alone, reaches its owners first.
    wait_for(lambda: _settled(founder.status()), 60)
    return {mesh_view(n)["node_id"]: n for n in nodes}


def _settled(status: dict[str, Any]) -> bool:
    return status["outbox_depth"] == 0 and status["under_replicated"] == 0


def _study(directory: Path, study: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [make_ct(directory / f"{n}.dcm", study, n, size=128) for n in range(INSTANCES)]


def _held_count(node: NodeProcess, study_uid: str) -> int:
    """Instances of the study in ``node``'s own index (what it stored durably)."""
    rows = node.get_json("/api/studies")
    return next((r["instances"] for r in rows if r["StudyInstanceUID"] == study_uid), 0)


def _shas(node: NodeProcess) -> set[str]:
    return {p.stem for p in (node.data_dir / "objects").rglob("*.dcm")}


def _intact(node: NodeProcess) -> bool:
    return all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem
               for p in (node.data_dir / "objects").rglob("*.dcm"))


def _owner_nodes(ids: dict[str, NodeProcess], study_uid: str) -> list[NodeProcess]:
    return [ids[o] for o in owners(study_uid, list(ids), 2)]


def _study_owned_by(ids: dict[str, NodeProcess], owner: NodeProcess, start: int) -> int:
    for n in range(start, start + 1000):
        if owner in _owner_nodes(ids, _uid(1, n)):
            return n
    raise AssertionError("no such study")


def test_status_is_never_zero_while_an_owner_lacks_an_instance(
    make_node, founder: NodeProcess, tmp_path: Path
) -> None:
    a = founder
    ids = _mesh(make_node, a)
    nodes = list(ids.values())
    owed_seen = 0
    for rep in range(REPETITIONS):
        study = 700 + rep
        uid = _uid(1, study)
        before = _shas(a)
        assert storescu(a, _study(tmp_path / str(study), study)) == []
        holders = _owner_nodes(ids, uid)
        deadline = time.monotonic() + 90
        while True:
            status = a.status()
            if _settled(status):
                # Read after the status: the owners can only have gained since.
                lacking = {n.aet: _held_count(n, uid) for n in holders}
                assert all(v == INSTANCES for v in lacking.values()), (
                    f"repetition {rep}: A said 0/0 while its owners held {lacking}")
                break
            owed_seen += 1
            assert time.monotonic() < deadline, f"repetition {rep}: never replicated"
            time.sleep(0.05)
        # Nothing lost, every copy byte-identical to what A stored.
        new = _shas(a) - before
        assert len(new) == INSTANCES
        for node in holders:
            assert new <= _shas(node)
    # Every repetition was caught owing before it was done, not only after.
    assert owed_seen >= REPETITIONS
    for node in nodes:
        assert _intact(node)
        assert node.status()["instances"] == len(_shas(node))


def test_wait_replicated_exits_0_only_when_owners_hold_everything_and_1_when_one_is_down(
    make_node, founder: NodeProcess, tmp_path: Path
) -> None:
    a = founder
    ids = _mesh(make_node, a)
    b = next(n for n in ids.values() if n.aet == "NODEB")
    wait = ("status", "--wait-replicated", "--data-dir", str(a.data_dir),
            "--http-port", str(a.http_port))

    study = _study_owned_by(ids, b, 800)
    uid = _uid(1, study)
    before = _shas(a)
    assert storescu(a, _study(tmp_path / "first", study)) == []
    done = cli(*wait, "--timeout", "90")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replicated: every study this node received is on its owners" in done.stdout
    new = _shas(a) - before
    for node in _owner_nodes(ids, uid):  # right after: really there, byte-identical
        assert _held_count(node, uid) == INSTANCES and new <= _shas(node)

    b.stop()
    wait_for(lambda: peer_states(a).get("NODEB") == "dead", 30)
    study = _study_owned_by(ids, b, study + 1)
    uid = _uid(1, study)
    before = _shas(a)
    assert storescu(a, _study(tmp_path / "second", study)) == []
    started = time.monotonic()
    late = cli(*wait, "--timeout", "3")
    assert late.returncode == 1, late.stdout + late.stderr
    assert time.monotonic() - started >= 3
    assert "still not replicated after 3 s" in late.stderr
    assert "not replicated: 1 study not yet on their owners" in late.stdout
    b_id = next(i for i, n in ids.items() if n is b)
    assert f"owed to NODEB ({b_id[:15]}, dead): 1 study, 30 instances" in late.stdout
    assert "Fault^Test" not in late.stdout + late.stderr  # no patient data

    b.start()  # B back: everything arrives, nothing lost
    done = cli(*wait, "--timeout", "90")
    assert done.returncode == 0, done.stdout + done.stderr
    new = _shas(a) - before
    assert len(new) == INSTANCES
    for node in _owner_nodes(ids, uid):
        assert _held_count(node, uid) == INSTANCES and new <= _shas(node)
    for node in ids.values():
        assert _intact(node)


def test_a_join_that_moves_ownership_never_reads_replicated_before_the_new_owner_holds(
    make_node, founder: NodeProcess
) -> None:
    a = founder  # alone with R = 2: its one instance cannot have two copies
    (study_uid,) = [r["StudyInstanceUID"] for r in a.get_json("/api/studies")]
    shas = _shas(a)
    assert a.status()["under_replicated"] == 1
    assert a.status()["replication"]["short_of_members"] == 1
    b = joiner(make_node, a, "nodeb", invite(a)).start()
    # Two members now own it: A's count must hold until B has it, through the join, the
    # first probes and anti-entropy.
    deadline = time.monotonic() + 60
    while True:
        status = a.status()
        if status["under_replicated"] == 0:
            assert _held_count(b, study_uid) == 1, "A said replicated before B held it"
            break
        assert time.monotonic() < deadline, "never replicated"
        time.sleep(0.05)
    assert shas <= _shas(b) and _intact(b)
