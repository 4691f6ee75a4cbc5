"""Deleting a study mesh-wide with a signed tombstone, between member processes.

(That an emptied data dir deletes nothing anywhere is test_replication's
test_emptied_node_is_refilled_and_nothing_is_deleted_elsewhere.)
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydicom import dcmread

from replication.service import ANTI_ENTROPY_INTERVAL
from replication.tombstone import make_tombstone
from tests.mesh_support import cli, invite, joiner, mesh_view, peer_states, start_founder, wait_for
from tests.support import NodeProcess, data_store_dir, dcmtk, storescu

# Two studies of pydicom-data, three instances each; every node holds every study.
DOOMED = ("MR2_J2KI.dcm", "MR2_J2KR.dcm", "MR2_UNCR.dcm")
KEPT = ("RG1_J2KI.dcm", "RG1_J2KR.dcm", "RG1_UNCR.dcm")
ENV = {**os.environ, "PACSMESH_REPLICAS": "3"}


def _files(names: tuple[str, ...]) -> list[Path]:
    return [data_store_dir() / name for name in names]


def _study(names: tuple[str, ...]) -> str:
    return str(dcmread(_files(names)[0], stop_before_pixels=True).StudyInstanceUID)


def _held(node: NodeProcess) -> set[str]:
    return {p.stem for p in (node.data_dir / "objects").rglob("*.dcm")}


def _shas_of(node: NodeProcess, study: str) -> set[str]:
    return {p.stem for p in (node.data_dir / "objects").rglob("*.dcm")
            if str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) == study}


def _listed(node: NodeProcess, study: str) -> bool:
    """Whether the node lists the study or says who holds it."""
    if study in {s["StudyInstanceUID"] for s in node.get_json("/api/studies")}:
        return True
    try:
        node.get_json(f"/api/studies/{study}")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        return False
    return True


def _gone(node: NodeProcess, study: str, shas: set[str]) -> bool:
    return not (_held(node) & shas) and not _listed(node, study)


def _stays(predicate: Callable[[], bool], seconds: float) -> None:
    """``predicate`` holds at every look for ``seconds`` (e.g. across anti-entropy rounds)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate()
        time.sleep(0.3)


def _mesh_of_three(make_node) -> list[NodeProcess]:
    """A (admin), B, C with R=3 and both studies stored on A and replicated everywhere."""
    a = start_founder(make_node, env=ENV)
    token = invite(a, "--uses", "2")
    b = joiner(make_node, a, "nodeb", token, env=ENV).start()
    c = joiner(make_node, a, "nodec", token, env=ENV).start()
    nodes = [a, b, c]
    wait_for(lambda: all(len(mesh_view(n)["members"]) == 3 for n in nodes), 30)
    wait_for(lambda: set(peer_states(a).values()) == {"alive"} and len(peer_states(a)) == 2, 30)
    assert storescu(a, _files(DOOMED) + _files(KEPT)) == []
    wait_for(lambda: all(_held(n) == _held(a) for n in nodes), 60)
    return nodes


def _delete(node: NodeProcess, study: str) -> None:
    result = cli("delete", "--data-dir", str(node.data_dir), "--study", study,
                 "--reason", "sent to the wrong archive", "--yes")
    assert result.returncode == 0, result.stderr


def test_deleted_study_is_gone_from_every_node_and_stays_gone(make_node) -> None:
    nodes = _mesh_of_three(make_node)
    a, b, _ = nodes
    study = _study(DOOMED)
    doomed = _shas_of(a, study)
    assert len(doomed) == 3
    kept = {n.data_dir: _held(n) - doomed for n in nodes}

    _delete(a, study)

    wait_for(lambda: all(_gone(n, study, doomed) for n in nodes), 30)
    for node in nodes:
        assert _held(node) == kept[node.data_dir]  # other studies untouched
        for path in (node.data_dir / "objects").rglob("*.dcm"):
            assert path.stem == hashlib.sha256(path.read_bytes()).hexdigest()
        [audit] = node.get_json("/api/tombstones")
        assert audit["StudyInstanceUID"] == study and audit["instances_removed"] == 3
        assert audit["deleted_by"] == mesh_view(a)["node_id"]
    # A modality sending the study again is refused, on any node: 0x0124, a general
    # failure status (PS3.7 C.5) that storescu prints as "Unknown Status: 0x124".
    sent = dcmtk("storescu", "-v", "-R", "-nh", "-aec", b.aet, *b.address, str(_files(DOOMED)[-1]))
    assert "Status: 0x124" in sent.stderr, sent.stderr
    assert _gone(b, study, doomed)
    # Neither anti-entropy nor the catalog brings it back.
    _stays(lambda: all(_gone(n, study, doomed) for n in nodes), ANTI_ENTROPY_INTERVAL + 3)
    patient = str(dcmread(_files(DOOMED)[0], stop_before_pixels=True).PatientName)
    for node in nodes:
        assert "deleted mesh-wide" in node.log()
        assert patient not in node.log()


def test_node_offline_during_the_deletion_applies_it_when_back(make_node) -> None:
    nodes = _mesh_of_three(make_node)
    a, b, c = nodes
    study = _study(DOOMED)
    doomed = _shas_of(c, study)
    c.stop()

    _delete(a, study)
    wait_for(lambda: _gone(a, study, doomed) and _gone(b, study, doomed), 30)
    assert _held(c) & doomed == doomed  # still on the stopped node's disk

    c.start()
    wait_for(lambda: _gone(c, study, doomed), 30)
    [audit] = c.get_json("/api/tombstones")
    assert audit["instances_removed"] == 3 and audit["received_from"] != "admin command"
    # Its copies do not flow back to A or B, before or after it learnt the tombstone.
    _stays(lambda: all(_gone(n, study, doomed) for n in nodes), ANTI_ENTROPY_INTERVAL + 3)
    for node in (a, b):
        [audit] = node.get_json("/api/tombstones")
        assert audit["instances_removed"] == 3  # applied once; nothing came back to remove


def test_forged_tombstones_delete_nothing(make_node) -> None:
    nodes = _mesh_of_three(make_node)
    a, b, c = nodes
    study = _study(DOOMED)
    held = {n.data_dir: _held(n) for n in nodes}
    mesh_id = json.loads((a.data_dir / "mesh" / "roster.json").read_text())["mesh"]
    forger = Ed25519PrivateKey.generate()

    refused = cli("delete", "--data-dir", str(b.data_dir), "--study", study, "--yes")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "pacsmesh: error: this node does not hold the mesh admin key"]

    # A member that is not the admin's node, handed a tombstone signed with another key.
    forged = make_tombstone(forger, mesh_id, study, mesh_view(b)["node_id"], time.time())
    spool = b.data_dir / "mesh" / "tombstones"
    spool.mkdir(parents=True)
    (spool / "forged.json").write_text(json.dumps(forged.to_json()))
    wait_for(lambda: (spool / "forged.rejected").exists(), 20)

    # A compromised member gossiping a forged tombstone straight from its index.
    c.stop()
    stone = make_tombstone(forger, mesh_id, study, mesh_view(a)["node_id"], time.time())
    with sqlite3.connect(c.data_dir / "index.sqlite") as conn:
        conn.execute(
            "INSERT INTO tombstones (study_uid, sig, deleted_by, deleted_at, document,"
            " received_from, applied_at) VALUES (?,?,?,?,?,?,?)",
            (study, stone.sig, stone.deleted_by, stone.at, json.dumps(stone.to_json()),
             "forger", stone.at),
        )
    c.start()
    c_id = mesh_view(c)["node_id"]
    wait_for(lambda: all(f"from {c_id[:15]} ignored" in n.log() for n in (a, b)), 30)

    assert "ignored (forged or tampered?)" in b.log()
    for node in nodes:
        assert _held(node) == held[node.data_dir]
        assert _listed(node, study)
    assert a.get_json("/api/tombstones") == [] and b.get_json("/api/tombstones") == []


def test_delete_needs_the_admin_key(tmp_path: Path) -> None:
    result = cli("delete", "--data-dir", str(tmp_path), "--study", "1.2.3", "--yes")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pacsmesh: error: this node is in no mesh (run: pacsmesh mesh init)"]
