"""pacsmesh import of portable media: what DCMTK's dcmmkdir writes, lower-case names,
files the DICOMDIR names but the medium lacks, and media refused whole (a file id leading
outside, illegal characters, a truncated zip, a zip bomb) with nothing stored."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.media_support import cli, files_under, held
from tests.support import ensure_on_path, one_file_per_instance


def dcmtk_medium(root: Path) -> int:
    """Real images as dcmmkdir lays them out (General Purpose USB, JPEG 2000 allowed);
    returns how many files its DICOMDIR names."""
    ensure_on_path("dcmmkdir")
    (root / "DICOM").mkdir(parents=True)
    for n, path in enumerate(one_file_per_instance(dcmtk_only=False)):
        shutil.copy(path, root / "DICOM" / f"IM{n:06d}")
    # +I: invent the Type 1 keys some samples lack; files it cannot list are left out.
    subprocess.run(["dcmmkdir", "+r", "+I", "-Pf2", "DICOM"], cwd=root, capture_output=True,
                   check=True)
    return named(root / "DICOMDIR")


def named(dicomdir: Path) -> int:
    return sum("ReferencedFileID" in r for r in dcmread(dicomdir).DirectoryRecordSequence)


def zip_of(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return dest


def test_media_written_by_dcmmkdir_import_completely(tmp_path: Path) -> None:
    medium = tmp_path / "disc"
    n = dcmtk_medium(medium)
    assert n > 20
    data_dir = tmp_path / "data"
    result = cli(tmp_path, "import", "--data-dir", str(data_dir), str(medium))
    assert result.returncode == 0, result.stderr
    assert f"stored {n}, duplicate 0, conflict 0, unreadable 0, missing 0" in result.stdout
    assert len(held(data_dir)) == n
    # The same medium as a zip: everything already held, nothing stored twice.
    again = cli(tmp_path, "import", "--data-dir", str(data_dir),
                str(zip_of(medium, tmp_path / "disc.zip")))
    assert f"stored 0, duplicate {n}, conflict 0" in again.stdout, again.stderr
    assert len(held(data_dir)) == n


def test_lower_case_names_and_missing_files(tmp_path: Path) -> None:
    medium = tmp_path / "disc"
    n = dcmtk_medium(medium)
    # As a disc without Rock Ridge mounts: every name lower case.
    (medium / "DICOM").rename(medium / "dicom")
    for path in (medium / "dicom").iterdir():
        path.rename(path.with_name(path.name.lower()))
    (medium / "DICOMDIR").rename(medium / "dicomdir")
    first = dcmread(medium / "dicomdir").DirectoryRecordSequence
    lost = next(r for r in first if "ReferencedFileID" in r).ReferencedFileID
    (medium.joinpath(*[p.lower() for p in lost])).unlink()
    data_dir = tmp_path / "data"
    result = cli(tmp_path, "import", "--data-dir", str(data_dir), str(medium))
    assert result.returncode == 1
    assert f"stored {n - 1}, duplicate 0, conflict 0, unreadable 0, missing 1" \
        in result.stdout
    assert f"missing: {medium}: {'/'.join(lost)} (named by the DICOMDIR)" in result.stderr
    assert len(held(data_dir)) == n - 1


def with_file_id(medium: Path, file_id: list[str]) -> None:
    """Point the DICOMDIR's first instance record at ``file_id``."""
    ds = dcmread(medium / "DICOMDIR")
    record = next(r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r)
    record.ReferencedFileID = file_id
    ds.save_as(medium / "DICOMDIR")


@pytest.mark.parametrize(("file_id", "why"), [
    (["..", "OUTSIDE"], "component '..'"),
    (["DICOM", "im-1.dcm"], "component 'im-1.dcm'"),
    (["A", "B", "C", "D", "E", "F", "G", "H", "I"], "has 9 levels"),
])
@pytest.mark.parametrize("as_zip", [False, True])
def test_a_bad_file_id_refuses_the_medium_whole(tmp_path: Path, file_id: list[str], why: str,
                                                as_zip: bool) -> None:
    medium = tmp_path / "disc"
    dcmtk_medium(medium)
    with_file_id(medium, file_id)
    # What the bad id would reach, were it followed: a real instance outside the medium.
    shutil.copy(medium / "DICOM" / "IM000001", tmp_path / "OUTSIDE")
    source = zip_of(medium, tmp_path / "disc.zip") if as_zip else medium
    before = files_under(tmp_path)
    data_dir = tmp_path / "data"
    result = cli(tmp_path, "import", "--data-dir", str(data_dir), str(source))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith("pacsmesh: error: ") and "the DICOMDIR is refused" in line, line
    assert why in line
    assert held(data_dir) == {}
    outside = {p for p in files_under(tmp_path) - before if data_dir not in p.parents}
    assert outside == set()


def test_a_truncated_zip_is_refused(tmp_path: Path) -> None:
    medium = tmp_path / "disc"
    dcmtk_medium(medium)
    whole = zip_of(medium, tmp_path / "whole.zip").read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole[: len(whole) // 2])
    data_dir = tmp_path / "data"
    result = cli(tmp_path, "import", "--data-dir", str(data_dir), str(cut))
    assert result.returncode == 2
    assert "is not a whole zip archive (truncated or damaged)" in result.stderr
    assert held(data_dir) == {}


def overlapping_bomb(medium: Path, dest: Path, copies: int) -> Path:
    """A zip of ``medium`` plus one member of 256 MiB of zeros that ``copies`` more
    central directory entries point at too (the overlapping-files bomb): a few hundred
    KiB that declare copies x 256 MiB."""
    zip_of(medium, dest)
    name = "DICOM/ZZZZZZZZ"
    with zipfile.ZipFile(dest, "a", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, \
            zf.open(name, "w") as member:
        block = bytes(2**20)
        for _ in range(256):
            member.write(block)
    data = dest.read_bytes()
    eocd = data[-22:]
    assert eocd[:4] == b"PK\x05\x06"
    entries, cd_size, cd_offset = struct.unpack("<HII", eocd[10:20])
    directory = data[cd_offset:cd_offset + cd_size]
    record = directory[directory.rindex(b"PK\x01\x02"):]
    assert name.encode() in record
    copied = b"".join(record.replace(name.encode(), f"DICOM/Z{n:07d}".encode())
                      for n in range(copies))
    cd = directory + copied
    dest.write_bytes(data[:cd_offset] + cd + eocd[:8]
                     + struct.pack("<HHII", entries + copies, entries + copies, len(cd),
                                   cd_offset) + eocd[20:])
    return dest


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path: Path) -> None:
    medium = tmp_path / "disc"
    dcmtk_medium(medium)
    bomb = overlapping_bomb(medium, tmp_path / "bomb.zip", copies=300)
    assert bomb.stat().st_size < 30 * 2**20
    data_dir = tmp_path / "data"
    result = cli(tmp_path, "import", "--data-dir", str(data_dir), str(bomb))
    assert result.returncode == 2
    assert "would unpack to" in result.stderr and "refused as a zip bomb" in result.stderr
    assert held(data_dir) == {}


def test_a_member_larger_than_an_instance_may_be_is_refused(tmp_path: Path) -> None:
    medium = tmp_path / "disc"
    dcmtk_medium(medium)
    big = zip_of(medium, tmp_path / "big.zip")
    with zipfile.ZipFile(big, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as zf, \
            zf.open("DICOM/ZZZZZZZZ", "w") as member:
        block = bytes(2**20)
        for _ in range(1025):  # 1 GiB and 1 MiB: more than one upload may be
            member.write(block)
    result = cli(tmp_path, "import", "--data-dir", str(tmp_path / "data"), str(big))
    assert result.returncode == 2
    assert "more than the limit of 1073741824: refused as a zip bomb" in result.stderr
    assert held(tmp_path / "data") == {}
