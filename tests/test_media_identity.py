"""Media carry the patient as currently known: an HL7 correction (a patient event) is on
the exported files and in the DICOMDIR, the old values in Original Attributes Sequence,
and the stored files are not rewritten."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from pydicom import dcmread

from node.app import close_archive, open_archive
from node.patients.events import Kind, PatientEvent, PatientKey
from node.patients.store import PatientStore, index_knows
from tests.media_support import cli, filled_data_dir, held


async def _correct(data_dir: Path, patient_id: str, name: str) -> None:
    archive, _ = await open_archive(data_dir)
    try:
        store = PatientStore(archive.index.db, index_knows(archive.index))
        await store.open()
        await store.accept(PatientEvent("HIS|HOSP|1", "2026-12-03T10:00:00", Kind.UPDATE,
                                        PatientKey(patient_id), None,
                                        {"PatientName": name}))
    finally:
        await close_archive(archive)


def test_an_export_shows_the_corrected_patient_name(tmp_path: Path) -> None:
    source = filled_data_dir(tmp_path)
    before = {uid: hashlib.sha256(p.read_bytes()).hexdigest() for uid, p in held(source).items()}
    asyncio.run(_correct(source, "ID1", "Corrected^Name"))
    dest = tmp_path / "out"
    result = cli(tmp_path, "export", "--data-dir", str(source), "--patient", "ID1",
                 "--to", str(dest), "--format", "folder")
    assert result.returncode == 0, result.stderr
    files = [p for p in dest.rglob("*") if p.is_file() and p.parent != dest]
    assert files
    for path in files:
        ds = dcmread(path)
        assert str(ds.PatientName) == "Corrected^Name"
        assert ds.PatientID == "ID1"
        assert "OriginalAttributesSequence" in ds
    patients = [r for r in dcmread(dest / "DICOMDIR").DirectoryRecordSequence
                if r.DirectoryRecordType == "PATIENT" and r.PatientID == "ID1"]
    assert [str(r.PatientName) for r in patients] == ["Corrected^Name"]
    after = {uid: hashlib.sha256(p.read_bytes()).hexdigest() for uid, p in held(source).items()}
    assert after == before  # the stored objects are untouched
