"""Patients whose names are not plain ASCII are found by C-FIND, in the character set the
query is sent in (PS3.4 C.2.2.2.1): exact and wildcard, case and accents folded, through
DCMTK findscu and pynetdicom, against a real node."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from node.query import pn_fold, pn_match
from tests.support import DCMTK_TIMEOUTS, NodeProcess, storescu
from tests.test_faults import make_ct

# Study number -> (Specific Character Set, Patient's Name), written in that set.
PATIENTS = {
    1: ("ISO_IR 100", "João^Conceição"),
    2: ("ISO_IR 192", "Müller^Zoë"),
    3: (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    4: ("ISO_IR 100", "Jones^Ann"),
}


def test_names_fold_case_and_accents_and_match_by_any_group() -> None:
    assert pn_fold("Müller^Zoë") == pn_fold("MULLER^ZOE") == "muller^zoe"
    assert pn_match("João^Conceição", pn_fold("JOAO*"))
    assert pn_match("Yamada^Tarou=山田^太郎=やまだ^たろう", pn_fold("山田*"))
    assert pn_match("Yamada^Tarou=山田^太郎=やまだ^たろう", pn_fold("yamada^tarou"))
    assert not pn_match("Müller^Zoë", pn_fold("Mül"))
    assert not pn_match("Jones^Ann", pn_fold("J?nes"))


@pytest.fixture
def stored(node: NodeProcess, tmp_path: Path) -> dict[int, str]:
    files, uids = [], {}
    for study, (charset, name) in PATIENTS.items():
        path = make_ct(tmp_path / f"{study}.dcm", 900 + study, 0)
        ds = dcmread(path)
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        uids[study] = str(ds.StudyInstanceUID)
    assert storescu(node, files) == []
    return uids


def _pynetdicom_find(node: NodeProcess, charset: str | list[str], name: str) -> set[str]:
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = name
    ds.StudyInstanceUID = ""
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet)
    assert assoc.is_established
    try:
        found = set()
        for status, rsp in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
            assert status is not None and status.Status in (0x0000, 0xFF00, 0xFF01)
            if rsp is not None and status.Status in (0xFF00, 0xFF01):
                found.add(str(rsp.StudyInstanceUID))
        return found
    finally:
        assoc.release()


def _findscu(node: NodeProcess, out: Path, charset: str, name: bytes) -> set[str]:
    """findscu with the name's bytes as given: in the query's own character set."""
    out.mkdir()
    args = [b"findscu", *(a.encode() for a in DCMTK_TIMEOUTS), b"-S", b"-aec",
            node.aet.encode(), b"-X", b"-od", str(out).encode(),
            b"-k", b"QueryRetrieveLevel=STUDY", b"-k", f"SpecificCharacterSet={charset}".encode(),
            b"-k", b"PatientName=" + name, b"-k", b"StudyInstanceUID",
            b"127.0.0.1", str(node.dicom_port).encode()]
    result = subprocess.run(args, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return {str(dcmread(p).StudyInstanceUID) for p in out.glob("rsp*.dcm")}


@pytest.mark.parametrize(("charset", "name", "study"), [
    ("ISO_IR 100", "João^Conceição", 1),
    ("ISO_IR 100", "JOÃO*", 1),
    ("ISO_IR 100", "joao^conceicao", 1),
    ("ISO_IR 192", "Müller^Zoë", 2),
    ("ISO_IR 192", "Müller*", 2),
    ("ISO_IR 192", "MÜLLER^ZOË", 2),
    (["", "ISO 2022 IR 87"], "山田^太郎", 3),
    (["", "ISO 2022 IR 87"], "山田*", 3),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", 3),
])
def test_pynetdicom_finds_names_in_their_character_set(
    node: NodeProcess, stored: dict[int, str], charset: str | list[str], name: str, study: int,
) -> None:
    assert _pynetdicom_find(node, charset, name) == {stored[study]}


def test_findscu_finds_names_in_latin_1_and_utf_8(
    node: NodeProcess, stored: dict[int, str], tmp_path: Path,
) -> None:
    assert _findscu(node, tmp_path / "a", "ISO_IR 100",
                    "João^Conceição".encode("latin-1")) == {stored[1]}
    assert _findscu(node, tmp_path / "b", "ISO_IR 100",
                    "Jo\u00e3o*".encode("latin-1")) == {stored[1]}
    assert _findscu(node, tmp_path / "c", "ISO_IR 192",
                    "Müller^Zoë".encode()) == {stored[2]}
    assert _findscu(node, tmp_path / "d", "ISO_IR 192", "Müller*".encode()) == {stored[2]}
    assert _findscu(node, tmp_path / "e", "ISO_IR 192", b"Jones^Ann") == {stored[4]}
