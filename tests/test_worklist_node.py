"""A node's worklist end to end: python-hl7 as the RIS sends orders over real MLLP to a
node process; DCMTK ``findscu -W`` as the modality reads the worklist; pynetdicom as the
modality's MPPS SCU moves the item's status."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association

from tests.hl7_support import His, ack_code, adt, err_location
from tests.support import NodeProcess, dcmtk, free_port
from tests.test_mpps import MPPS, _step
from tests.test_worklist_orders import UID, omi, orm


@pytest.fixture
def ris_node(make_node) -> tuple[NodeProcess, int]:
    port = free_port()
    node = make_node("worklist", extra_args=("--hl7-port", str(port))).start()
    return node, port


def items(node: NodeProcess) -> list[tuple[str, str, str]]:
    with contextlib.closing(sqlite3.connect(node.data_dir / "index.sqlite")) as db:
        return db.execute("SELECT accession, patient_id, status FROM worklist_items"
                          " ORDER BY accession").fetchall()


def test_orders_become_durable_worklist_items(ris_node: tuple[NodeProcess, int]) -> None:
    node, port = ris_node
    ris = His(port)
    try:
        assert ack_code(ris.send(orm("NW", "M1"))) == "AA"
        assert ack_code(ris.send(omi("NW", "O1"))) == "AA"
        missing = ris.send(orm("NW", "M2", accession=""))
        assert (ack_code(missing), err_location(missing)) == ("AE", "OBR^1^18")
        assert ack_code(ris.send(orm("DC", "M3", "ACC9"))) == "AA"
    finally:
        ris.close()
    # Acknowledged means durable: the rows are there once the ACK is.
    assert items(node) == [("ACC1", "P1", "SCHEDULED"), ("ACC9", "P2", "DISCONTINUED")]
    node.stop()
    node.start()
    again = His(port)
    try:  # after a restart the items are known: a repeat is a repeat, a change applies
        assert ack_code(again.send(orm("NW", "M1"))) == "AA"
        assert ack_code(again.send(orm("SC", "M4", status="CM"))) == "AA"
    finally:
        again.close()
    assert items(node) == [("ACC1", "P1", "COMPLETED"), ("ACC9", "P2", "DISCONTINUED")]


def worklist(node: NodeProcess, out: Path, *keys: str) -> tuple[list[Dataset], str]:
    """DCMTK ``findscu -W`` (the Modality Worklist model): the responses and its log."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    args = ["-W", "-aec", node.aet, "-X", "-od", str(out),
            "-k", "AccessionNumber", "-k", "PatientID", "-k", "PatientName",
            "-k", "StudyInstanceUID"]
    for key in keys:
        args += ["-k", key]
    result = dcmtk("findscu", "-v", *args, *node.address)
    return [dcmread(p) for p in sorted(out.iterdir())], result.stdout + result.stderr


@contextlib.contextmanager
def modality(node: NodeProcess) -> Iterator[Association]:
    """pynetdicom as the modality's MPPS SCU, associated with ``node``."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet)
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()


def completed() -> Dataset:
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    return done


def test_findscu_sees_the_worklist_and_mpps_moves_it(
        ris_node: tuple[NodeProcess, int], tmp_path: Path) -> None:
    node, port = ris_node
    ris = His(port, encoding="latin-1")
    try:
        for text in (orm("NW", "M1"), orm("NW", "M2", "ACC2", pid="P7^^^HOSP", station="CT02"),
                     orm("NW", "M3", "ACC3", modality="MR", station="MR01",
                         start="20261204090000"),
                     orm("NW", "M4", "ACC4"), orm("CA", "M5", "ACC4")):
            assert ack_code(ris.send(text)) == "AA"
        # The HIS renames P7's patient: the worklist shows the name as it is now.
        assert ack_code(ris.send(adt("A08", "H1", "P7^^^HOSP", "Roe-Smith^Rita"))) == "AA"
    finally:
        ris.close()
    out = tmp_path / "found"
    found, _ = worklist(node, out, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
                        "ScheduledProcedureStepSequence[0].Modality=CT",
                        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate="
                        "20261203-20261203")
    assert [str(d.AccessionNumber) for d in found] == ["ACC1"]  # ACC4 cancelled
    [first] = found
    assert (first.PatientID, first.PatientName, first.StudyInstanceUID) == ("P1", "Roe^Richard",
                                                                           UID)
    assert sorted(e.keyword for e in first.ScheduledProcedureStepSequence[0]) == [
        "Modality", "ScheduledProcedureStepStartDate", "ScheduledStationAETitle"]
    assert "PatientBirthDate" not in first  # only what was asked for
    by_name, _ = worklist(node, out, "PatientName=roe-sm*")
    assert [(str(d.AccessionNumber), str(d.PatientName)) for d in by_name] == [
        ("ACC2", "Roe-Smith^Rita")]
    everything, _ = worklist(node, out, "ScheduledProcedureStepSequence[0].Modality")
    assert [str(d.AccessionNumber) for d in everything] == ["ACC1", "ACC2", "ACC3"]
    # Two step items in one identifier: refused, nothing changed.
    bad, log = worklist(node, out, "ScheduledProcedureStepSequence[0].Modality=CT",
                        "ScheduledProcedureStepSequence[1].Modality=MR")
    assert bad == [] and "Error: DataSetDoesNotMatchSOPClass" in log, log  # 0xA900

    with modality(node) as assoc:
        uid = generate_uid()
        assert assoc.send_n_create(_step(accession="ACC1"), MPPS, uid)[0].Status == 0x0000
        started, _ = worklist(node, out, "AccessionNumber=ACC1",
                              "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus")
        assert [d.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus
                for d in started] == ["STARTED"]
        assert assoc.send_n_set(completed(), MPPS, uid)[0].Status == 0x0000
    after, _ = worklist(node, out, "ScheduledProcedureStepSequence[0].Modality")
    assert [str(d.AccessionNumber) for d in after] == ["ACC2", "ACC3"]  # ACC1 completed
    assert ("ACC1", "P1", "COMPLETED") in items(node)
