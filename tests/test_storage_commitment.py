"""Storage Commitment Push Model SCP against Orthanc 1.10 as the requester.

Orthanc stores instances to a node and asks it to commit them (``POST
/modalities/{id}/store`` with ``"StorageCommitment": true``); the node reports back on a
new association, and ``GET /storage-commitment/{uid}`` says what Orthanc was told. Each
answer is compared with what the nodes really hold on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.datadir import INDEX_FILE
from tests.mesh_support import invite, joiner, mesh_view, peer_states, start_founder, wait_for
from tests.orthanc import ORTHANC, OrthancProcess
from tests.support import NodeProcess, free_port, one_file_per_instance

pytestmark = pytest.mark.skipif(ORTHANC is None, reason="Orthanc is not installed")

SAMPLES = 3


def _post(orthanc: OrthancProcess, path: str, body: Any, raw: bool = False) -> Any:
    data = body if raw else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}{path}", data=data,
                                 method="POST")
    with urllib.request.urlopen(req, timeout=60) as rsp:
        return json.loads(rsp.read())


@pytest.fixture
def orthanc_port() -> int:
    return free_port()


@pytest.fixture
def orthanc_for(tmp_path: Path) -> Iterator:
    """Starts an Orthanc on the given DICOM port that knows ``node`` as a modality (the
    node was told Orthanc's address before it started)."""
    started: list[OrthancProcess] = []

    def make(node: NodeProcess, port: int) -> OrthancProcess:
        server = OrthancProcess(tmp_path / "orthanc", dicom_port=port,
                                modalities={node.aet: ("127.0.0.1", node.dicom_port)})
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


def _upload(orthanc: OrthancProcess, files: list[Path]) -> dict[str, str]:
    """Orthanc instance id -> SOP Instance UID of each file uploaded."""
    ids = {}
    for path in files:
        answer = _post(orthanc, "/instances", path.read_bytes(), raw=True)
        tags = orthanc.get_json(f"/instances/{answer['ID']}/simplified-tags")
        ids[answer["ID"]] = tags["SOPInstanceUID"]
    return ids


def _store_and_commit(orthanc: OrthancProcess, node_aet: str, ids: list[str]) -> str:
    answer = _post(orthanc, f"/modalities/{node_aet}/store",
                   {"Resources": ids, "StorageCommitment": True, "Synchronous": True})
    return str(answer["StorageCommitmentTransactionUID"])


def _report(orthanc: OrthancProcess, transaction: str) -> dict[str, Any]:
    return orthanc.get_json(f"/storage-commitment/{transaction}")


def test_lone_node_commits_what_it_holds(make_node, orthanc_for, orthanc_port: int) -> None:
    node = make_node("lone", aet="LONE",
                     modalities=(f"ORTHANC@127.0.0.1:{orthanc_port}",)).start()
    orthanc = orthanc_for(node, orthanc_port)
    ids = _upload(orthanc, one_file_per_instance()[:SAMPLES])
    transaction = _store_and_commit(orthanc, node.aet, list(ids))
    wait_for(lambda: _report(orthanc, transaction)["Status"] != "Pending", 30)
    report = _report(orthanc, transaction)
    assert report["Status"] == "Success" and not report["Failures"]
    assert {i["SOPInstanceUID"] for i in report["Success"]} == set(ids.values())
    assert set(ids.values()) <= set(_verified_holdings(node))


def _verified_holdings(node: NodeProcess) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of what ``node`` holds: indexed, and on disk with
    that hash."""
    with sqlite3.connect(f"file:{node.data_dir / INDEX_FILE}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT sop_uid, sha256 FROM instances").fetchall()
    held = {}
    for sop, sha in rows:
        path = next((node.data_dir / "objects").rglob(f"{sha}.dcm"), None)
        if path is not None and hashlib.sha256(path.read_bytes()).hexdigest() == sha:
            held[sop] = sha
    return held


def _commitment_rows(node: NodeProcess) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{node.data_dir / INDEX_FILE}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT transaction_uid, state FROM commitments").fetchall()


def _env(deadline: float) -> dict[str, str]:
    return {**os.environ, "PACSMESH_STORAGE_COMMITMENT_DEADLINE": str(deadline)}


def _two_members(make_node, orthanc_port: int, deadline: float) -> tuple[NodeProcess,
                                                                       NodeProcess]:
    """NODEA (Orthanc's peer) and NODEB in one mesh of two: with R = 2 both own every
    study, so a commitment needs both copies."""
    founder = start_founder(make_node, modalities=(f"ORTHANC@127.0.0.1:{orthanc_port}",),
                            env=_env(deadline))
    b = joiner(make_node, founder, "nodeb", invite(founder)).start()
    wait_for(lambda: len(mesh_view(founder)["members"]) == 2
             and peer_states(founder).get("NODEB") == "alive", 30)
    return founder, b


def test_success_only_once_the_other_owner_holds_the_instances(
    make_node, orthanc_for, orthanc_port: int
) -> None:
    a, b = _two_members(make_node, orthanc_port, 300)
    orthanc = orthanc_for(a, orthanc_port)
    ids = _upload(orthanc, one_file_per_instance()[:SAMPLES])
    assert b.proc is not None
    b.proc.send_signal(signal.SIGSTOP)  # the only other owner, cut off
    try:
        transaction = _store_and_commit(orthanc, a.aet, list(ids))
        wait_for(lambda: any(t == transaction for t, _ in _commitment_rows(a)), 30)
        assert set(ids.values()) <= set(_verified_holdings(a))
        assert _report(orthanc, transaction)["Status"] == "Pending"
        assert not set(ids.values()) & set(_verified_holdings(b))
    finally:
        b.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: _report(orthanc, transaction)["Status"] != "Pending", 90)
    # Told Success: both members hold every instance, hash-checked, on disk.
    held_by_b = _verified_holdings(b)
    report = _report(orthanc, transaction)
    assert report["Status"] == "Success" and not report["Failures"]
    assert {i["SOPInstanceUID"] for i in report["Success"]} == set(ids.values())
    assert set(ids.values()) <= set(held_by_b) and set(ids.values()) <= set(
        _verified_holdings(a))


def test_with_the_other_owner_down_the_report_waits_and_fails_at_the_deadline(
    make_node, orthanc_for, orthanc_port: int
) -> None:
    deadline = 8.0
    a, b = _two_members(make_node, orthanc_port, deadline)
    b.stop()
    orthanc = orthanc_for(a, orthanc_port)
    ids = _upload(orthanc, one_file_per_instance()[:SAMPLES])
    asked = time.monotonic()
    transaction = _store_and_commit(orthanc, a.aet, list(ids))
    wait_for(lambda: _report(orthanc, transaction)["Status"] != "Pending", 60)
    # The deadline runs from the N-ACTION, which came after ``asked``.
    assert time.monotonic() - asked >= deadline
    report = _report(orthanc, transaction)
    assert report["Status"] == "Failure" and not report["Success"]
    assert {i["SOPInstanceUID"] for i in report["Failures"]} == set(ids.values())
    # Held here, not on R members: failed as a processing failure, not as unknown.
    assert {i["FailureReason"] for i in report["Failures"]} == {0x0110}
    assert set(ids.values()) <= set(_verified_holdings(a))


def test_a_pending_commitment_survives_a_sigkill(make_node, orthanc_for,
                                                 orthanc_port: int) -> None:
    a, b = _two_members(make_node, orthanc_port, 600)
    b.stop()
    orthanc = orthanc_for(a, orthanc_port)
    ids = _upload(orthanc, one_file_per_instance()[:SAMPLES])
    transaction = _store_and_commit(orthanc, a.aet, list(ids))
    wait_for(lambda: (transaction, "waiting") in _commitment_rows(a), 30)
    a.kill()
    assert _report(orthanc, transaction)["Status"] == "Pending"
    a.start()
    b.start()
    wait_for(lambda: _report(orthanc, transaction)["Status"] != "Pending", 120)
    report = _report(orthanc, transaction)
    assert report["Status"] == "Success"
    assert {i["SOPInstanceUID"] for i in report["Success"]} == set(ids.values())
    assert set(ids.values()) <= set(_verified_holdings(b))
    assert _commitment_rows(a) == [(transaction, "reported")]
