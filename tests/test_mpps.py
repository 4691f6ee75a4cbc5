"""MPPS SCP: pynetdicom as the modality (DCMTK has no MPPS tool) against a node process."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association

from node.datadir import INDEX_FILE
from node.mpps import StepRefused, check_create, check_set
from tests.support import NodeProcess

MPPS = "1.2.840.10008.3.1.2.3.3"


def _step(status: str = "IN PROGRESS", accession: str = "ACC17") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepID = "PPS1"
    ds.PatientID = "P17"
    item = Dataset()
    item.AccessionNumber = accession
    item.RequestedProcedureID = "RP1"
    item.ScheduledProcedureStepID = "SPS1"
    item.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.17"
    ds.ScheduledStepAttributesSequence = [item]
    return ds


def _status(value: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = value
    return ds


@pytest.fixture
def assoc(node: NodeProcess) -> Iterator[Association]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MPPS)
    association = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet)
    assert association.is_established
    yield association
    association.release()


def _rows(node: NodeProcess, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{node.data_dir / INDEX_FILE}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def test_step_is_created_completed_and_then_final(node: NodeProcess, assoc: Association) -> None:
    uid = generate_uid()
    status, _ = assoc.send_n_create(_step(), MPPS, uid)
    assert status.Status == 0x0000
    # A repeated create is a duplicate, and does not replace the first one.
    status, _ = assoc.send_n_create(_step(accession="OTHER"), MPPS, uid)
    assert status.Status == 0x0111
    status, _ = assoc.send_n_set(_status("COMPLETED"), MPPS, uid)
    assert status.Status == 0x0000
    status, _ = assoc.send_n_set(_status("DISCONTINUED"), MPPS, uid)
    assert status.Status == 0x0110 and status.ErrorID == 0xA710
    assert _rows(node, "SELECT sop_uid, status FROM mpps") == [(uid, "COMPLETED")]
    assert _rows(node, "SELECT mpps_uid, accession_number, requested_procedure_id,"
                       " scheduled_step_id, study_uid FROM mpps_steps") == [
        (uid, "ACC17", "RP1", "SPS1", "1.2.826.0.1.3680043.8.498.17")]


def test_create_without_a_uid_gets_one(node: NodeProcess, assoc: Association) -> None:
    status, _ = assoc.send_n_create(_step(), MPPS, None)
    assert status.Status == 0x0000
    (uid,), = _rows(node, "SELECT sop_uid FROM mpps")
    assert UID(uid).is_valid


def test_bad_steps_are_refused_and_nothing_changes(
    node: NodeProcess, assoc: Association
) -> None:
    unknown = generate_uid()
    status, _ = assoc.send_n_set(_status("COMPLETED"), MPPS, unknown)
    assert status.Status == 0x0112
    # Created as COMPLETED: refused, so it does not exist afterwards either.
    status, _ = assoc.send_n_create(_step("COMPLETED"), MPPS, unknown)
    assert status.Status == 0x0106
    uid = generate_uid()
    assert assoc.send_n_create(_step(), MPPS, uid)[0].Status == 0x0000
    status, _ = assoc.send_n_set(_status("FINISHED"), MPPS, uid)
    assert status.Status == 0x0106
    assert _rows(node, "SELECT sop_uid, status FROM mpps") == [(uid, "IN PROGRESS")]
    assert assoc.send_n_set(_status("COMPLETED"), MPPS, unknown)[0].Status == 0x0112


def test_state_rules() -> None:
    assert check_create(_step()) == "IN PROGRESS"
    assert check_set("IN PROGRESS", _status("discontinued")) == "DISCONTINUED"
    assert check_set("IN PROGRESS", Dataset()) == "IN PROGRESS"
    with pytest.raises(StepRefused) as refused:
        check_set("COMPLETED", Dataset())
    assert (refused.value.status, refused.value.error_id) == (0x0110, 0xA710)
    with pytest.raises(StepRefused) as missing:
        check_create(Dataset())
    assert missing.value.status == 0x0120
