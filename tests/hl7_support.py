"""HL7 test helpers: ADT messages, python-hl7's MLLP client as the HIS, DCMTK findscu."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hl7
from hl7.client import MLLPClient
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.support import dcmtk

NOW = "20261203101500"


def adt(trigger: str, control: str, pid: str, name: str = "", *, charset: str = "",
        mrg: str = "", when: str = NOW, version: str = "2.5") -> str:
    msh = f"MSH|^~\\&|HIS|HOSP|PACS|RAD|{when}||ADT^{trigger}|{control}|P|{version}"
    if charset:
        msh += f"||||||{charset}"
    segments = [msh, f"EVN|{trigger}|{when}", f"PID|1||{pid}||{name}"]
    if mrg:
        segments.append(f"MRG|{mrg}")
    return "\r".join(segments) + "\r"


class His:
    """python-hl7's blocking MLLP client on one connection, with a time bound."""

    def __init__(self, port: int, encoding: str = "utf-8") -> None:
        self.client = MLLPClient("127.0.0.1", port, encoding=encoding)
        self.client.socket.settimeout(15)

    def send(self, message: str | bytes) -> hl7.Message:
        reply = self.client.send_message(message)
        return hl7.parse(reply.strip(b"\x0b\x1c\r").decode("latin-1"))

    def send_raw(self, data: bytes) -> bytes:
        self.client.socket.sendall(data)
        return self.client.socket.recv(65536)

    def closed_by_peer(self) -> bool:
        try:
            return self.client.socket.recv(1) == b""
        except (TimeoutError, ConnectionError):
            return True

    def close(self) -> None:
        self.client.close()


def ack_code(ack: hl7.Message) -> str:
    return str(ack.extract_field("MSA", 1, 1))


def err_location(ack: hl7.Message) -> str:
    return str(ack.segment("ERR")[2])


def trauma_study(directory: Path, patient_id: str, name: str = "UNKNOWN^TRAUMA") -> Path:
    """A real CT image filed under ``patient_id``, with UIDs of its own."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID, ds.PatientName = patient_id, name
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{patient_id}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def find_studies(node: Any, out: Path, **keys: str) -> list[Any]:
    """C-FIND at STUDY level with DCMTK findscu; the response identifiers."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    args = ["-S", "-aec", node.aet, "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
            "-k", "StudyInstanceUID", "-k", "PatientBirthDate", "-k", "PatientSex"]
    for key in ("PatientID", "PatientName"):
        args += ["-k", f"{key}={keys[key]}" if key in keys else key]
    result = dcmtk("findscu", *args, *node.address)
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.iterdir())]
