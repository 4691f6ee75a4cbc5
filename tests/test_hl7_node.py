"""A node's HL7 listener end to end: python-hl7 sends ADT over real MLLP to a node
process; DCMTK findscu sees what a viewer would."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from node.hl7.framing import frame
from node.identity import CERT_FILE, IDENTITY_DIR
from tests.hl7_support import His, ack_code, adt, err_location, find_studies, trauma_study
from tests.mesh_support import cli
from tests.support import NodeProcess, dcmtk, free_port, storescu


@pytest.fixture
def hl7_node(make_node) -> tuple[NodeProcess, int]:
    port = free_port()
    node = make_node("hl7", extra_args=("--hl7-port", str(port))).start()
    return node, port


def names(found: list) -> list[tuple[str, str]]:
    return [(str(d.PatientID), str(d.PatientName)) for d in found]


def test_updates_and_merges_over_mllp_change_what_c_find_shows(
        hl7_node: tuple[NodeProcess, int], tmp_path: Path) -> None:
    node, port = hl7_node
    files = [trauma_study(tmp_path / "in", "TRAUMA-1"), trauma_study(tmp_path / "in", "P-77",
                                                                       "ROE^RICHARD")]
    assert storescu(node, files) == []
    out = tmp_path / "found"
    assert names(find_studies(node, out, PatientID="TRAUMA-1")) == [("TRAUMA-1", "UNKNOWN^TRAUMA")]

    his = His(port, encoding="latin-1")
    try:
        # Identified: a Latin-1 name, its charset in MSH-18.
        first = his.send(adt("A08", "M1", "TRAUMA-1^^^HOSP", "Müller^Zoë", charset="8859/1"))
        assert ack_code(first) == "AA"
        assert str(first.extract_field("MSA", 1, 2)) == "M1"
        again = his.send(adt("A08", "M1", "TRAUMA-1^^^HOSP", "Müller^Zoë", charset="8859/1"))
        assert ack_code(again) == "AA"  # a repeat: acknowledged again, applied once
        found = find_studies(node, out, PatientID="TRAUMA-1")
        assert names(found) == [("TRAUMA-1", "Müller^Zoë")]
        assert len(find_studies(node, out, PatientName="MULLER*")) == 1
        trauma_study_uid = dcmread(files[0]).StudyInstanceUID
        metadata = node.get_json(f"/dicom-web/studies/{trauma_study_uid}/metadata")
        assert metadata[0]["00100010"]["Value"] == [{"Alphabetic": "Müller^Zoë"}]

        # The trauma record merged into the patient's own.
        merged = his.send(adt("A40", "M2", "P-77^^^HOSP", "Roe^Richard", mrg="TRAUMA-1^^^HOSP"))
        assert ack_code(merged) == "AA"
        survivor = find_studies(node, out, PatientID="P-77")
        assert names(survivor) == [("P-77", "Roe^Richard")] * 2
        assert find_studies(node, out, PatientID="TRAUMA-1") == []  # PIR: the prior is gone

        # A study arriving later under the merged id is filed under the survivor.
        assert storescu(node, [trauma_study(tmp_path / "late", "TRAUMA-1")]) == []
        assert names(find_studies(node, out, PatientID="P-77")) == [("P-77", "Roe^Richard")] * 3
        (tmp_path / "got").mkdir()
        got = dcmtk("getscu", "-S", "-aec", node.aet, "-od", str(tmp_path / "got"),
                    "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=P-77", *node.address)
        assert got.returncode == 0, got.stderr
        retrieved = [dcmread(p) for p in sorted((tmp_path / "got").iterdir())]
        assert sorted((str(d.PatientID), str(d.PatientName)) for d in retrieved) == \
            [("P-77", "Roe^Richard")] * 3
        # Both coerced (the survivor's own study had its name in capitals): the values
        # replaced are kept in Original Attributes Sequence.
        replaced = [d.OriginalAttributesSequence[-1] for d in retrieved]
        assert {r.ReasonForTheAttributeModification for r in replaced} == {"COERCE"}
        assert sorted((str(r.ModifiedAttributesSequence[0].get("PatientID", "")),
                       str(r.ModifiedAttributesSequence[0].PatientName)) for r in replaced) == \
            [("", "ROE^RICHARD"), ("TRAUMA-1", "UNKNOWN^TRAUMA"), ("TRAUMA-1", "UNKNOWN^TRAUMA")]
        # dicom3tools finds no inconsistent patient attributes across them.
        checked = subprocess.run(["dcentvfy", *map(str, sorted((tmp_path / "got").iterdir()))],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0 and "Error" not in checked.stderr, checked.stderr
        for stored in (node.data_dir / "objects").rglob("*.dcm"):  # never rewritten
            assert hashlib.sha256(stored.read_bytes()).hexdigest() == stored.stem
        # Metadata kept ready from before the merge is built again.
        metadata = node.get_json(f"/dicom-web/studies/{trauma_study_uid}/metadata")
        assert metadata[0]["00100020"]["Value"] == ["P-77"]

        twice = his.send(adt("A40", "M3", "X-1^^^HOSP", "Doe", mrg="TRAUMA-1^^^HOSP"))
        assert ack_code(twice) == "AE" and err_location(twice) == "MRG^1^1"
        unknown = his.send(adt("A40", "M4", "P-77^^^HOSP", "Doe", mrg="NOBODY^^^HOSP"))
        assert ack_code(unknown) == "AE" and err_location(unknown) == "MRG^1^1"
    finally:
        his.close()
    rows = sqlite3.connect(node.data_dir / "index.sqlite").execute(
        "SELECT event_id FROM patient_events ORDER BY event_id").fetchall()
    assert rows == [("HIS|HOSP|M1",), ("HIS|HOSP|M2",)]
    assert "Müller" not in node.log() and "TRAUMA-1" not in node.log()
    shown = cli("patients", "history", "--data-dir", str(node.data_dir), "TRAUMA-1", "--json")
    assert shown.returncode == 0, shown.stderr
    [trauma] = json.loads(shown.stdout)
    assert trauma["current"]["patient"] == ["P-77", "HOSP"] and trauma["current"]["merged"]
    assert [e["event_id"] for e in trauma["events"]] == ["HIS|HOSP|M1", "HIS|HOSP|M2"]
    audited = cli("audit", "--data-dir", str(node.data_dir), "--json",
                  "--action", "patient-record")
    assert {json.loads(line)["patient_id"] for line in audited.stdout.splitlines()} >= \
        {"TRAUMA-1", "P-77"}


def test_bad_input_is_answered_and_the_listener_keeps_serving(
        hl7_node: tuple[NodeProcess, int], tmp_path: Path) -> None:
    node, port = hl7_node
    assert storescu(node, [trauma_study(tmp_path / "in", "PAT-1")]) == []
    his = His(port)
    try:
        assert ack_code(his.send(adt("A08", "B1", "PAT-1", "A", version="2.1"))) == "AR"
        unknown_type = his.send(adt("A99", "B2", "PAT-1", "A"))
        assert ack_code(unknown_type) == "AR" and err_location(unknown_type) == "MSH^1^9^2"
        no_pid = his.send(adt("A08", "B3", "", "A"))
        assert ack_code(no_pid) == "AE" and err_location(no_pid) == "PID^1^3"
        not_hl7 = his.send(b"\x00\xff\xfe garbage inside a frame")
        assert ack_code(not_hl7) == "AR"
        his.client.socket.sendall(b"\x0bMSH|^~\\&|HIS|HOSP|cut short")  # truncated frame
    finally:
        his.close()
    garbage = His(port)
    try:
        garbage.client.socket.sendall(b"\x16\x03\x01 not MLLP \xff" * 50)
        assert garbage.closed_by_peer()
    finally:
        garbage.close()
    bounded = time.monotonic() + 20
    while True:  # the listener still serves whatever the others sent
        his = His(port)
        try:
            assert ack_code(his.send(adt("A08", "B9", "PAT-1", "Fine^Again"))) == "AA"
            break
        except OSError:
            assert time.monotonic() < bounded
        finally:
            his.close()
    assert names(find_studies(node, tmp_path / "f", PatientID="PAT-1")) == [("PAT-1", "Fine^Again")]
    rows = sqlite3.connect(node.data_dir / "index.sqlite").execute(
        "SELECT event_id FROM patient_events").fetchall()
    assert rows == [("HIS|HOSP|B9",)]


def test_mllp_over_tls_with_the_node_certificate(make_node, tmp_path: Path) -> None:
    port = free_port()
    node = make_node("tls", extra_args=("--hl7-port", str(port), "--hl7-tls")).start()
    assert storescu(node, [trauma_study(tmp_path / "in", "TLS-1")]) == []
    context = ssl.create_default_context(
        cafile=str(node.data_dir / IDENTITY_DIR / CERT_FILE))
    context.check_hostname = False  # self-signed, named by its AE title: trusted by file
    with socket.create_connection(("127.0.0.1", port)):  # a silent client holds no one up
        his = His(port)
        try:
            his.client.socket = context.wrap_socket(his.client.socket)
            assert ack_code(his.send(adt("A08", "T1", "TLS-1", "Secure^Sam"))) == "AA"
        finally:
            his.close()
    assert names(find_studies(node, tmp_path / "f", PatientID="TLS-1")) == [("TLS-1",
                                                                           "Secure^Sam")]
    plain = His(port)  # no HL7 without TLS on this port
    try:
        try:
            reply = plain.send_raw(frame(adt("A08", "T2", "TLS-1", "Plain^Pat").encode()))
        except ConnectionError:
            reply = b""
        assert b"MSA" not in reply
    finally:
        plain.close()
