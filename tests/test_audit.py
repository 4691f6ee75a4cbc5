"""The audit trail: store, query, get and move of a distinctive patient are recorded with
who, where, patient and study; rows are append-only; `pacsmesh audit` reads them while
the node runs, as a table, JSON or ATNA syslog; and no log line at INFO or above carries
the patient's name or id."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from node.atna import syslog_line
from tests.support import NodeProcess, dcmtk, storescu
from tests.test_dicom_roundtrip import StoreSCP

PATIENT_NAME = "ZQXAUDIT^WINIFRED"
PATIENT_ID = "ZQX-4711-AUDIT"


def _distinctive_study(directory: Path) -> tuple[list[Path], str]:
    """Two CT instances of a patient whose name and id occur nowhere else."""
    study = generate_uid()
    series = generate_uid()
    files = []
    for n in range(2):
        ds = dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = directory / f"ct{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files, study


def pacsmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, timeout=60)


def audit_rows(node: NodeProcess, *args: str) -> list[dict]:
    result = pacsmesh("audit", "--data-dir", str(node.data_dir), "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def wait_for_rows(node: NodeProcess, predicate: object, *args: str) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        rows = audit_rows(node, *args)
        if predicate(rows) or time.monotonic() > deadline:  # type: ignore[operator]
            return rows
        time.sleep(0.2)


@pytest.fixture(scope="module")
def exercised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str]]:
    root = tmp_path_factory.mktemp("audit")
    files, study = _distinctive_study(root)
    dest = StoreSCP(root / "dest", "AUDITDEST", accept_all=True)
    node = NodeProcess(data_dir=root / "node", aet="ARCHIVE", modalities=(dest.modality,),
                       extra_args=("--log-level", "INFO")).start()
    try:
        assert storescu(node, files) == []
        found = dcmtk("findscu", "-S", "-aec", node.aet, "-k", "QueryRetrieveLevel=STUDY",
                      "-k", f"PatientID={PATIENT_ID}", "-k", "PatientName",
                      "-k", "StudyInstanceUID", *node.address)
        assert found.returncode == 0, found.stderr
        (root / "got").mkdir()
        got = dcmtk("getscu", "-S", "-aec", node.aet, "-od", str(root / "got"),
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                    "-k", f"PatientID={PATIENT_ID}", *node.address)
        assert got.returncode == 0, got.stderr
        moved = dcmtk("movescu", "-S", "-aec", node.aet, "-aem", dest.aet,
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                      *node.address)
        assert moved.returncode == 0, moved.stderr
        yield node, study
    finally:
        node.stop()
        dest.stop()


def test_each_access_is_recorded_with_patient_and_study(
    exercised: tuple[NodeProcess, str]
) -> None:
    node, study = exercised
    rows = wait_for_rows(node, lambda r: {"store", "query", "retrieve", "export"}
                         <= {x["action"] for x in r})
    by_action = {r["action"]: r for r in rows}
    assert {"association", "store", "query", "retrieve", "export"} <= set(by_action)
    store = by_action["store"]
    # One row per study per association, not one per instance.
    assert (store["patient_id"], store["study_uid"], store["outcome"]) == (
        PATIENT_ID, study, "success")
    assert store["detail"] == "2 instance(s)"
    assert store["calling_aet"] == "STORESCU" and store["address"] == "127.0.0.1"
    assert by_action["query"]["patient_id"] == PATIENT_ID
    assert by_action["retrieve"]["study_uid"] == study
    assert by_action["retrieve"]["calling_aet"] == "GETSCU"
    assert by_action["export"]["study_uid"] == study
    assert "AUDITDEST" in by_action["export"]["detail"]


def test_filters(exercised: tuple[NodeProcess, str]) -> None:
    node, study = exercised
    wait_for_rows(node, lambda r: any(x["action"] == "export" for x in r))
    assert {r["patient_id"] for r in audit_rows(node, "--patient", PATIENT_ID)} == {PATIENT_ID}
    assert {r["study_uid"] for r in audit_rows(node, "--study", study)} == {study}
    assert {r["action"] for r in audit_rows(node, "--action", "store")} == {"store"}
    assert audit_rows(node, "--since", "2999-01-01") == []
    assert audit_rows(node, "--since", "2000-01-01T00:00:00")
    bad = pacsmesh("audit", "--data-dir", str(node.data_dir), "--since", "yesterday")
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr


def test_syslog_export_carries_atna_fields(exercised: tuple[NodeProcess, str]) -> None:
    node, study = exercised
    wait_for_rows(node, lambda r: any(x["action"] == "export" for x in r))
    result = pacsmesh("audit", "--data-dir", str(node.data_dir), "--syslog",
                      "--action", "store")
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[0]
    assert re.match(r"<85>1 \d{4}-\d\d-\d\dT[\d:.]+Z \S+ pacsmesh - STORE \[ATNA@32473 ", line)
    for field in ('EventID="110104^DCM^DICOM Instances Transferred"', 'EventActionCode="C"',
                  'EventOutcomeIndicator="0"', 'UserID="STORESCU"',
                  'NetworkAccessPointID="127.0.0.1"',
                  f'ParticipantObjectID.Patient="{PATIENT_ID}"',
                  f'ParticipantObjectID.Study="{study}"', "EventDateTime="):
        assert field in line


def test_no_patient_identifiers_in_logs_at_info_or_above(
    exercised: tuple[NodeProcess, str]
) -> None:
    node, _ = exercised
    log = node.log()
    assert "C-GET from GETSCU" in log  # the INFO lines are there
    for line in log.splitlines():
        assert "ZQXAUDIT" not in line.upper() and "WINIFRED" not in line.upper(), line
        assert PATIENT_ID not in line, line


def test_audit_rows_are_append_only(exercised: tuple[NodeProcess, str]) -> None:
    node, _ = exercised
    wait_for_rows(node, bool)
    conn = sqlite3.connect(node.data_dir / "index.sqlite", timeout=10)
    try:
        for sql in ("UPDATE audit SET patient_id = 'X'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()


def test_syslog_line_escapes_values() -> None:
    row = {"at": 0.0, "action": "deletion", "outcome": "success", "user": "", "calling_aet": "",
           "node_id": "NODE", "address": "", "patient_id": "", "study_uid": '1.2"]\\',
           "detail": "x"}
    line = syslog_line(row, "host")
    assert 'ParticipantObjectID.Study="1.2\\"\\]\\\\"' in line
    assert 'EventID="110105^DCM^DICOM Study Deleted"' in line and 'EventActionCode="D"' in line
    assert line.startswith("<85>1 1970-01-01T00:00:00.000Z host pacsmesh - DELETION ")
