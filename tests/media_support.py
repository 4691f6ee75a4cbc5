"""What the portable-media tests share: real pydicom-data studies in a data dir, the
``pacsmesh`` command, and reading back what a data dir holds."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from functools import cache
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from tests.support import sample_index
from tests.test_cli import pacsmesh

# Three real studies: JPEG (lossy and lossless) and RLE compressed samples, and an
# uncompressed eight-instance CT series.
STUDIES = ("1.3.6.1.4.1.5962.1.2.13.20040826185059.5457",
           "1.3.6.1.4.1.5962.1.2.5.20040826185059.5457",
           "1.2.826.0.1.3680043.8.498.12406831542731051035295345080039845114")


@cache
def study_files() -> dict[str, Path]:
    """SOP Instance UID -> one pydicom-data file, for every instance of STUDIES."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for uid, paths in sample_index().items():
            if str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID) in STUDIES:
                out[uid] = paths[0]
    return out


def compressed_count() -> int:
    return sum(str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
               != ExplicitVRLittleEndian for p in study_files().values())


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return pacsmesh(*args, tmp_path=tmp_path, timeout=300)


def filled_data_dir(tmp_path: Path, name: str = "source") -> Path:
    """A data dir holding STUDIES, imported as a user would."""
    folder = tmp_path / f"{name}-files"
    folder.mkdir()
    for n, path in enumerate(study_files().values()):
        shutil.copy(path, folder / f"{n:03d}.dcm")
    data_dir = tmp_path / name
    result = cli(tmp_path, "import", "--data-dir", str(data_dir), str(folder))
    assert result.returncode == 0, result.stderr
    return data_dir


def held(data_dir: Path) -> dict[str, Path]:
    """SOP Instance UID -> object file, for every object a (stopped) data dir holds."""
    out = {}
    for path in (data_dir / "objects").rglob("*"):
        if path.is_file():
            out[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    return out


def same_pixels(a: Path, b: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one, other = dcmread(a), dcmread(b)
        if "PixelData" not in one:
            return "PixelData" not in other
        return bool(np.array_equal(one.pixel_array, other.pixel_array))


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}
