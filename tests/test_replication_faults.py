"""Replication under faults, between member processes on loopback: an owner killed while
copies stream to it, a sender restarted in the middle of its queue."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from replication.placement import owners, place
from replication.service import PARALLEL_SENDS
from tests.mesh_support import cli, invite, joiner, mesh_view, peer_states, start_founder, wait_for
from tests.support import NodeProcess, storescu
from tests.test_faults import _uid, make_ct


def _held(node: NodeProcess) -> set[str]:
    return {p.stem for p in (node.data_dir / "objects").rglob("*.dcm")}


def _intact(node: NodeProcess) -> bool:
    return all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem
               for p in (node.data_dir / "objects").rglob("*.dcm"))


def _partials(node: NodeProcess) -> list[Path]:
    return list((node.data_dir / "partial").glob("*"))


def _received(node: NodeProcess) -> dict[str, int]:
    return node.status()["replication"]["received"]


def _study_for(ids: list[str], owner: str, sender: str) -> tuple[int, str]:
    """A study number that ``owner`` owns and ``sender`` does not, and whose stand-in for
    ``owner`` is not ``sender`` either (so a rerouted copy really travels); and that
    stand-in."""
    for n in range(1, 1000):
        placement = place(_uid(1, n), ids, 2, {owner})
        stand_in = placement.stand_ins.get(owner)
        if owner in placement.owners and sender not in (*placement.owners, stand_in):
            assert stand_in is not None
            return n, stand_in
    raise AssertionError("no such study")


def _series(directory: Path, study: int, count: int, side: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [make_ct(directory / f"{n}.dcm", study, n, size=side, noise=True)
            for n in range(count)]


def test_owner_killed_mid_transfer_gets_stand_ins_and_converges_without_duplicates(
    make_node, tmp_path: Path
) -> None:
    env = {**os.environ, "PACSMESH_HINT_AFTER": "2"}
    a = start_founder(make_node, env=env)
    token = invite(a, "--uses", "3")
    b, c, d = (joiner(make_node, a, n, token, env=env).start()
               for n in ("nodeb", "nodec", "noded"))
    nodes = [a, b, c, d]
    wait_for(lambda: len(peer_states(a)) == 3 and set(peer_states(a).values()) == {"alive"}, 40)
    wait_for(lambda: all(len(mesh_view(n)["members"]) == 4 for n in nodes), 40)
    ids = {mesh_view(n)["node_id"]: n for n in nodes}
    id_of = {n.aet: i for i, n in ids.items()}
    # Large instances (resumable, ~11 MB of noise each) of a study B owns and A does not.
    study, stand_in = _study_for(list(ids), owner=id_of["NODEB"], sender=id_of["NODEA"])
    files = _series(tmp_path / "study", study, 12, side=2400)
    old = _held(a)  # the founder's one instance; everything else is this study

    # SIGKILL B while its copies stream in (they start while the study still arrives at
    # A): some instances stored there, not all.
    with ThreadPoolExecutor(1) as pool:
        storing = pool.submit(storescu, a, files)
        wait_for(lambda: 0 < len(_held(b) - old) < len(files), 60, interval=0.05)
        b.kill()
        assert storing.result() == []
    # As stored (DCMTK may re-encode a file's meta on the way).
    shas = _held(a) - old
    assert len(shas) == len(files)
    # B's share reroutes: the stand-in takes hinted copies of what B had not got
    # (what reached B's disk is durable there), the other owner all its own.
    on_b = _held(b) & shas
    assert 0 < len(on_b) < len(shas)
    targets = owners(_uid(1, study), list(ids), 2)
    (other,) = (ids[t] for t in targets if t != id_of["NODEB"])
    wait_for(lambda: shas <= _held(other) and shas - on_b <= _held(ids[stand_in]), 90)

    b.start()
    wait_for(lambda: all(shas <= _held(ids[t]) for t in targets)
             and all(n.status()["outbox_depth"] == 0 for n in nodes), 90)
    # Nothing was sent twice to the nodes that stayed up (hinted copies included);
    # B may get a copy both from A's outbox and from the stand-in's hand-back.
    for node in (c, d):
        assert _received(node)["duplicate"] == 0
    for node in nodes:
        # Each instance once per index, every file whole (bytes match their SHA-256
        # name), no partial transfer left behind.
        assert node.status()["instances"] == len(_held(node))
        assert _intact(node)
        assert _partials(node) == []


def _second_member(make_node, a: NodeProcess) -> NodeProcess:
    """B joins A's mesh, is alive to A and holds A's instance (by anti-entropy)."""
    b = joiner(make_node, a, "nodeb", invite(a, "--uses", "1")).start()
    wait_for(lambda: peer_states(a).get("NODEB") == "alive", 30)
    wait_for(lambda: _held(b) == _held(a), 30)
    return b


def test_sender_restarted_mid_queue_resumes_and_resends_nothing_acknowledged(
    make_node, founder: NodeProcess, tmp_path: Path
) -> None:
    a = founder
    b = _second_member(make_node, a)
    b.stop()  # the copies queue up while the owner is away
    wait_for(lambda: peer_states(a).get("NODEB") == "dead", 30)
    files = _series(tmp_path / "study", 3, 60, side=1024)  # 2 MB each
    assert storescu(a, files) == []
    wait_for(lambda: a.status()["outbox_depth"] == len(files), 30)
    old = _held(b)

    b.start()  # the backlog drains; stop the sender in the middle of it
    wait_for(lambda: 0 < len(_held(b) - old) < len(files) // 2, 60, interval=0.05)
    peer = a.status()["replication"]["peers"][0]
    assert peer["aet"] == "NODEB" and peer["state"] == "alive" and peer["breaker"] == "closed"
    assert peer["outbox_depth"] > 0 and peer["catch_up"]["queued"] >= len(files)
    assert peer["bytes_per_second"] > 0 and peer["outbox_bytes"] > 0
    shown = cli("status", "--data-dir", str(a.data_dir), "--http-port", str(a.http_port))
    assert "replication to members" in shown.stdout and "NODEB" in shown.stdout
    a.kill()

    a.start()
    wait_for(lambda: a.status()["outbox_depth"] == 0, 60)
    wait_for(lambda: len(_held(b) - old) == len(files), 30)
    got = _received(b)
    # Only the copies in flight at the kill (B stored them, A never heard) come again.
    assert got["duplicate"] <= PARALLEL_SENDS
    assert got["stored"] == len(files)
    assert _intact(b) and b.status()["instances"] == len(_held(b))


def test_receiver_killed_mid_instance_resumes_from_its_partial_file(
    make_node, founder: NodeProcess, tmp_path: Path
) -> None:
    a = founder
    b = _second_member(make_node, a)
    big = _series(tmp_path / "study", 4, 1, side=5400)[0]  # one instance of ~58 MB
    old = _held(a)
    assert storescu(a, [big]) == []
    (stored,) = [p for p in (a.data_dir / "objects").rglob("*.dcm") if p.stem not in old]
    size = stored.stat().st_size  # as A stored it (DCMTK may re-encode the file meta)

    def part_size() -> int:
        return sum(p.stat().st_size for p in _partials(b))

    wait_for(lambda: size // 10 < part_size() < size * 8 // 10, 60, interval=0.02)
    b.kill()
    kept = part_size()
    assert 0 < kept < size

    b.start()  # the part survived the crash: start-up reconciliation leaves it alone
    wait_for(lambda: _held(b) == _held(a), 60)
    got = _received(b)
    assert got["resumed"] == 1 and got["stored"] == 1
    assert got["bytes"] == size - kept  # only the rest crossed the wire
    assert _partials(b) == [] and _intact(b)
