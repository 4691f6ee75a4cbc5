"""The DICOM port opens before the HTTP and mesh half of the node is up (node/app.py): a
store taken in between is owed and replicated like any other, and nothing reads "safe"
before the other owner holds it. Two members on loopback (R = 2: both own every study)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests.mesh_support import cli, invite, joiner, mesh_view, peer_states, wait_for
from tests.support import NodeProcess
from tests.test_faults import make_ct

CONNECT_BOUND = 60.0  # seconds the restarted node may take to open its DICOM port


def _store_as_soon_as_the_port_opens(node: NodeProcess, path: Path) -> bool:
    """C-STORE ``path``, associating again every few ms until the port takes it;
    returns whether the node's HTTP API was already answering when the store was
    acknowledged (for the failure message: the early window is what is tested)."""
    ae = AE(ae_title="EARLY")
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 30
    ae.add_requested_context(CTImageStorage)
    deadline = time.monotonic() + CONNECT_BOUND
    while True:
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet)
        if assoc.is_established:
            break
        assert node.proc is not None and node.proc.poll() is None, node.log()
        assert time.monotonic() < deadline, "the DICOM port never opened"
        time.sleep(0.005)
    try:
        status = assoc.send_c_store(path)
        assert status and status.Status == 0, status
    finally:
        assoc.release()
    return _answers(node)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _objects(node: NodeProcess) -> set[str]:
    return {p.stem for p in (node.data_dir / "objects").rglob("*.dcm")}


def _holds(node: NodeProcess, sha: str) -> bool:
    return (node.data_dir / "objects" / sha[:2] / f"{sha}.dcm").is_file()


def test_a_store_taken_before_the_mesh_half_is_up_is_owed_then_replicated(
    make_node, founder: NodeProcess, tmp_path: Path
) -> None:
    a = founder
    b = joiner(make_node, a, "nodeb", invite(a)).start()
    wait_for(lambda: all(len(mesh_view(n)["members"]) == 2 for n in (a, b)), 40)
    wait_for(lambda: peer_states(a).get("NODEB") == "alive", 40)
    wait_for(lambda: a.status()["outbox_depth"] == 0
             and a.status()["under_replicated"] == 0, 60)
    held_before = a.status()["instances"]

    assert a.stop() == 0
    instance = make_ct(tmp_path / "early.dcm", 77, 1, size=64)
    objects_before = _objects(a)
    log = a.log_path.open("ab")
    a.proc = subprocess.Popen(a.command(), stdout=log, stderr=subprocess.STDOUT, env=a.env)
    log.close()
    http_was_up = _store_as_soon_as_the_port_opens(a, instance)
    (sha,) = _objects(a) - objects_before  # as stored: the node writes the file meta

    # From the first status the HTTP API gives, until B holds the bytes, A owes them.
    wait_for(lambda: _answers(a), 60, 0.02)
    while not _holds(b, sha):
        state = a.status()
        if not _holds(b, sha):  # read after the status: B lacked it then too
            assert state["outbox_depth"] > 0 or state["under_replicated"] > 0, (
                f"status read settled while B lacked the early store "
                f"(HTTP up at the store: {http_was_up}): {state}")
        time.sleep(0.02)

    done = cli("status", "--wait-replicated", "--timeout", "90", "--data-dir",
               str(a.data_dir), "--http-port", str(a.http_port))
    assert done.returncode == 0, done.stdout + done.stderr
    shown = cli("status", "--json", "--data-dir", str(a.data_dir),
                "--http-port", str(a.http_port))
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)["status"]
    assert status["instances"] == held_before + 1
    assert status["outbox_depth"] == 0 and status["under_replicated"] == 0
    assert _sha(b.data_dir / "objects" / sha[:2] / f"{sha}.dcm") == sha  # byte-identical


def _answers(node: NodeProcess) -> bool:
    try:
        node.status()
        return True
    except OSError:
        return False
