"""pacsmesh export: real studies (compressed and not) out on IHE PDI media, checked by
DCMTK and dicom3tools, read back by pycdlib, and imported into another data dir."""

from __future__ import annotations

import io
import re
import subprocess
import time
import zipfile
from pathlib import Path

import pycdlib
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from tests.media_support import (
    STUDIES,
    cli,
    compressed_count,
    filled_data_dir,
    held,
    same_pixels,
    study_files,
)
from tests.support import ensure_on_path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three studies exported once in each format."""
    tmp = tmp_path_factory.mktemp("export")
    source = filled_data_dir(tmp)
    out = {"data_dir": source}
    for fmt in ("folder", "zip", "iso"):
        dest = tmp / f"medium.{fmt}"
        args = [a for uid in STUDIES for a in ("--study", uid)]
        started = time.monotonic()
        result = cli(tmp, "export", "--data-dir", str(source), *args, "--to", str(dest),
                     "--format", fmt)
        assert result.returncode == 0, result.stderr
        assert f"exported {len(study_files())} instance(s) of 3 study(ies)" in result.stdout
        print(f"{fmt}: {time.monotonic() - started:.2f} s, {result.stdout.strip()}")
        out[fmt] = dest
    return out


def instance_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and p.name not in ("DICOMDIR", "README.TXT", "INDEX.HTM"))


def test_the_folder_is_ihe_pdi_content(exported: dict[str, Path]) -> None:
    folder = exported["folder"]
    top = {p.name for p in folder.iterdir()}
    assert {"DICOMDIR", "README.TXT", "INDEX.HTM"} <= top
    files = instance_files(folder)
    assert len(files) == len(study_files())
    for path in files:
        parts = path.relative_to(folder).parts
        assert len(parts) <= 8
        assert all(re.fullmatch(r"[A-Z0-9_]{1,8}", p) for p in parts), parts
        assert str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID) \
            == ExplicitVRLittleEndian
    readme = (folder / "README.TXT").read_text()
    assert "Explicit VR Little Endian" in readme
    assert f"{compressed_count()} compressed or differently encoded" in readme
    assert "PACSmesh node" in readme
    index = (folder / "INDEX.HTM").read_text()
    assert all(uid in index for uid in STUDIES)


def test_dcmtk_rederives_the_dicomdir_with_the_general_purpose_cd_checks(
        exported: dict[str, Path], tmp_path: Path) -> None:
    ensure_on_path("dcmmkdir", "dcmdump")
    folder = exported["folder"]
    ours = subprocess.run(["dcmdump", str(folder / "DICOMDIR")], capture_output=True,
                          text=True, check=True).stdout
    files = [str(p.relative_to(folder)) for p in instance_files(folder)]
    redone = tmp_path / "DICOMDIR"
    # -Pgp: STD-GEN-CD, whose checks refuse anything but Explicit VR Little Endian.
    result = subprocess.run(["dcmmkdir", "-Pgp", "+r", "+D", str(redone), *files],
                            cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "E:" not in result.stderr, result.stderr
    theirs = subprocess.run(["dcmdump", str(redone)], capture_output=True, text=True,
                            check=True).stdout
    for record in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
        assert ours.count(f"[{record}") == theirs.count(f"[{record}"), record
    assert ours.count("ReferencedFileID") == len(files) == theirs.count("ReferencedFileID")


def test_dciodvfy_finds_no_error_in_the_dicomdir(exported: dict[str, Path]) -> None:
    ensure_on_path("dciodvfy")
    result = subprocess.run(["dciodvfy", str(exported["folder"] / "DICOMDIR")],
                            capture_output=True, text=True)
    report = result.stdout + result.stderr
    assert "BasicDirectory" in report
    assert "Error" not in report, report


def test_the_iso_reads_back_with_pycdlib(exported: dict[str, Path]) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(exported["iso"]))
    try:
        names = {f"{d.rstrip('/')}/{f}" for d, _, fs in iso.walk(iso_path="/") for f in fs}
        assert {"/DICOMDIR.;1", "/README.TXT;1", "/INDEX.HTM;1"} <= names
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, iso_path="/DICOMDIR.;1")
        out.seek(0)
        records = dcmread(out).DirectoryRecordSequence
        assert sum("ReferencedFileID" in r for r in records) == len(study_files())
        assert len(names) == len(study_files()) + 3
    finally:
        iso.close()


def test_the_zip_holds_the_same_files(exported: dict[str, Path]) -> None:
    folder = exported["folder"]
    with zipfile.ZipFile(exported["zip"]) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        assert names == {p.relative_to(folder).as_posix() for p in folder.rglob("*")
                         if p.is_file()}
        assert "3 study(ies)" in zf.read("README.TXT").decode()


@pytest.mark.parametrize("fmt", ["folder", "zip", "iso"])
def test_reimport_gives_every_instance_pixel_identical(
        exported: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    target = tmp_path / "target"
    started = time.monotonic()
    result = cli(tmp_path, "import", "--data-dir", str(target), str(exported[fmt]))
    assert result.returncode == 0, result.stderr
    print(f"import {fmt}: {time.monotonic() - started:.2f} s")
    n = len(study_files())
    assert f"stored {n}, duplicate 0, conflict 0, unreadable 0, missing 0" in result.stdout
    imported = held(target)
    assert set(imported) == set(study_files())
    for uid, original in study_files().items():
        assert same_pixels(original, imported[uid]), uid
    again = cli(tmp_path, "import", "--data-dir", str(target), str(exported[fmt]))
    assert f"stored 0, duplicate {n}," in again.stdout  # nothing stored twice
    assert len(held(target)) == n


def test_keep_syntax_writes_instances_as_stored(exported: dict[str, Path],
                                                tmp_path: Path) -> None:
    dest = tmp_path / "kept"
    result = cli(tmp_path, "export", "--data-dir", str(exported["data_dir"]), "--study",
                 STUDIES[0], "--to", str(dest), "--keep-syntax")
    assert result.returncode == 0, result.stderr
    stored = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes()
              for p in held(exported["data_dir"]).values()}
    files = instance_files(dest)
    assert files
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert path.read_bytes() == stored[uid]
    assert "transfer syntax they were stored in" in (dest / "README.TXT").read_text()


def test_an_unknown_study_is_a_clear_error(exported: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "none.zip"
    result = cli(tmp_path, "export", "--data-dir", str(exported["data_dir"]), "--study",
                 "1.2.3.4", "--to", str(dest))
    assert result.returncode == 2
    assert result.stderr.startswith("pacsmesh: error: no instances of study 1.2.3.4")
    assert not dest.exists() and not dest.with_name("none.zip.part").exists()


def test_export_by_patient_and_its_audit_row(exported: dict[str, Path],
                                             tmp_path: Path) -> None:
    source = exported["data_dir"]
    dest = tmp_path / "patient.zip"
    result = cli(tmp_path, "export", "--data-dir", str(source), "--patient", "ID1",
                 "--to", str(dest))
    assert result.returncode == 0, result.stderr
    assert "exported 8 instance(s) of 1 study(ies)" in result.stdout
    audit = cli(tmp_path, "audit", "--data-dir", str(source), "--json")
    assert audit.returncode == 0, audit.stderr
    assert '"export"' in audit.stdout and "portable media (zip)" in audit.stdout
