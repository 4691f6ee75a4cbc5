"""A member joining a mesh whose studies are all held twice: each copy it comes to own is
sent to it once, by one of the holders, not by both. (Each instance ~4 MB, below the
resumable size: a resumable one is asked about first, which hides a second sender.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydicom import dcmread

from replication.placement import owners
from tests.mesh_support import invite, joiner, mesh_view, peer_states, start_founder, wait_for
from tests.support import NodeProcess, storescu
from tests.test_faults import _uid, make_ct

STUDIES = 30


def _held(node: NodeProcess) -> set[str]:
    return {p.stem for p in (node.data_dir / "objects").rglob("*.dcm")}


def _intact(node: NodeProcess) -> bool:
    return all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem
               for p in (node.data_dir / "objects").rglob("*.dcm"))


def three_settled_members(make_node) -> tuple[list[NodeProcess], dict[str, str]]:
    """A, B and C, each seeing the other two alive, with nothing left to send; and the
    node id of each AE title."""
    a = start_founder(make_node)
    token = invite(a, "--uses", "2")
    b = joiner(make_node, a, "nodeb", token).start()
    c = joiner(make_node, a, "nodec", token).start()
    nodes = [a, b, c]
    wait_for(lambda: all(set(peer_states(n).values()) == {"alive"}
                         and len(peer_states(n)) == 2 for n in nodes), 60)
    id_of = {n.aet: mesh_view(n)["node_id"] for n in nodes}
    wait_for(lambda: all(n.status()["outbox_depth"] == 0 for n in nodes), 60)
    return nodes, id_of


def test_a_new_owner_gets_each_copy_once_though_two_members_hold_it(
    make_node, tmp_path: Path
) -> None:
    a = start_founder(make_node)
    token = invite(a, "--uses", "2")
    b = joiner(make_node, a, "nodeb", token).start()
    wait_for(lambda: peer_states(a).get("NODEB") == "alive", 40)
    files = [make_ct(tmp_path / f"{n}.dcm", n, 0, size=1400, noise=True)
             for n in range(1, STUDIES + 1)]
    assert storescu(a, files) == []
    sent = _held(a)
    # With two members and R = 2 both hold everything.
    wait_for(lambda: _held(b) == sent and a.status()["outbox_depth"] == 0, 60)

    c = joiner(make_node, a, "nodec", token).start()
    nodes = [a, b, c]
    wait_for(lambda: all(len(mesh_view(n)["members"]) == 3 for n in nodes), 40)
    ids = {mesh_view(n)["node_id"]: n for n in nodes}
    id_c = mesh_view(c)["node_id"]
    # What C comes to own (the stored files, named by their SHA-256, read back at A).
    owed = {p.stem for p in (a.data_dir / "objects").rglob("*.dcm")
            if id_c in owners(dcmread(p, stop_before_pixels=True).StudyInstanceUID,
                              list(ids), 2)}
    assert len(owed) > STUDIES // 3  # C owns about 2/3 of them
    # B learns of C by gossip; once it sees C alive it compares holdings with C at once.
    wait_for(lambda: peer_states(b).get("NODEC") == "alive", 60)
    wait_for(lambda: owed <= _held(c)
             and all(n.status()["outbox_depth"] == 0 for n in nodes), 90)
    # Both A and B compared holdings with C as soon as it was alive; one copy each.
    got = c.status()["replication"]["received"]
    assert got["duplicate"] == 0, got
    assert got["stored"] == len(_held(c))
    for node in nodes:
        assert node.status()["instances"] == len(_held(node))
        assert _intact(node)
    assert _held(c) <= sent


def test_a_member_back_from_an_outage_gets_each_copy_once_from_origin_and_co_owner(
    make_node, tmp_path: Path
) -> None:
    """A stores while C is down: C's copies wait in A's outbox, and B, C's co-owner of
    those studies, holds them too. When C returns, A's queued rows and B's comparison
    with C (both at once) must not both send."""
    nodes, id_of = three_settled_members(make_node)
    a, b, c = nodes
    c.stop()
    wait_for(lambda: peer_states(a).get("NODEC") == "dead"
             and peer_states(b).get("NODEC") == "dead", 40)
    # Studies B and C own: A (which owns none of them) queues copies for both.
    members = list(id_of.values())
    numbers = [n for n in range(1, 400)
               if set(owners(_uid(1, n), members, 2))
               == {id_of["NODEB"], id_of["NODEC"]}][:STUDIES // 2]
    files = [make_ct(tmp_path / f"{n}.dcm", n, 0, size=1400, noise=True) for n in numbers]
    before = _held(a)
    assert storescu(a, files) == []
    shas = _held(a) - before
    wait_for(lambda: shas <= _held(b), 60)
    c.start()
    wait_for(lambda: peer_states(b).get("NODEC") == "alive", 60)
    wait_for(lambda: shas <= _held(c)
             and all(n.status()["outbox_depth"] == 0 for n in nodes), 90)
    got = c.status()["replication"]["received"]
    # Two causes of a second copy were found here: a copy queued by anti-entropy, sent,
    # then queued again from the change feed; and a copy stored at C as C stopped whose
    # answer was lost, sent again when C returned (a copy tried before now asks first).
    assert got["duplicate"] == 0, got
    for node in nodes:
        assert node.status()["instances"] == len(_held(node))
        assert _intact(node)
