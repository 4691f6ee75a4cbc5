"""Replication between member processes on loopback: stored on one node, on R owners."""

from __future__ import annotations

import hashlib

from pydicom import dcmread

from replication.placement import owners
from tests.mesh_support import invite, joiner, mesh_view, peer_states, wait_for
from tests.support import NodeProcess, one_file_per_instance, storescu


def _held(node: NodeProcess) -> set[str]:
    return {p.stem for p in (node.data_dir / "objects").rglob("*.dcm")}


def test_study_stored_on_one_node_reaches_its_owners_byte_identical(
    make_node, founder: NodeProcess
) -> None:
    token = invite(founder, "--uses", "2")
    b = joiner(make_node, founder, "nodeb", token).start()
    c = joiner(make_node, founder, "nodec", token).start()
    nodes = [founder, b, c]
    wait_for(lambda: all(len(mesh_view(n)["members"]) == 3 for n in nodes), 30)
    wait_for(lambda: all(s == "alive" for s in peer_states(founder).values())
             and len(peer_states(founder)) == 2, 30)
    ids = {mesh_view(n)["node_id"]: n for n in nodes}
    before = _held(founder)

    samples = one_file_per_instance()[:6]
    assert storescu(founder, samples) == []
    new = _held(founder) - before
    assert len(new) == len(samples)

    def placed() -> bool:
        for sha in new:
            path = next((founder.data_dir / "objects").rglob(f"{sha}.dcm"))
            study = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
            for owner in owners(study, list(ids), 2):
                if sha not in _held(ids[owner]):
                    return False
        return True

    wait_for(placed, 60)
    wait_for(lambda: founder.status()["outbox_depth"] == 0, 30)
    assert founder.status()["under_replicated"] == 0
    # Byte-identical: every copy's content hashes to the name it is stored under.
    for node in (b, c):
        for path in (node.data_dir / "objects").rglob("*.dcm"):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem
    # Copies go only where placement says (plus the node that received the study).
    for node_id, node in ids.items():
        if node is founder:
            continue
        for sha in _held(node):
            path = next((node.data_dir / "objects").rglob(f"{sha}.dcm"))
            study = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
            assert node_id in owners(study, list(ids), 2)


def test_copies_for_an_owner_that_is_down_wait_in_the_outbox_and_arrive_later(
    make_node, founder: NodeProcess
) -> None:
    token = invite(founder, "--uses", "1")
    b = joiner(make_node, founder, "nodeb", token).start()
    wait_for(lambda: peer_states(founder).get("NODEB") == "alive", 30)
    b.stop()
    wait_for(lambda: peer_states(founder).get("NODEB") == "dead", 30)

    before = _held(founder)  # stored before B joined: placing it is anti-entropy's job
    samples = one_file_per_instance()[:4]
    assert storescu(founder, samples) == []  # two members, two replicas: B owns them all
    wait_for(lambda: founder.status()["outbox_depth"] == len(samples), 20)
    assert founder.status()["under_replicated"] >= 1

    # A restarted sender keeps its outbox; the returning owner receives everything.
    founder.stop()
    founder.start()
    assert founder.status()["outbox_depth"] == len(samples)
    b.start()
    wait_for(lambda: founder.status()["outbox_depth"] == 0, 60)
    assert founder.status()["under_replicated"] == 0
    assert _held(b) == _held(founder) - before
