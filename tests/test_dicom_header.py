"""Index keys read from undecoded elements equal pydicom's decoded values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file

from node.dicom_header import TEXT_KEYWORDS, _text, read_header, read_keys
from tests.support import data_store_dir

UID_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")


def _part10(path: Path) -> bool:
    """pydicom-data holds one raw data set without a Part 10 header: no archive input."""
    try:
        read_header(path)
    except ValueError:
        return False
    return True


def _files() -> list[Path]:
    real = sorted(p for p in data_store_dir().iterdir() if p.suffix == ".dcm")
    charsets = [Path(p) for p in get_charset_files("*.dcm")]
    return [p for p in (*real, *charsets, Path(get_testdata_file("CT_small.dcm")))
            if _part10(p)]


def _decoded(path: Path) -> dict[str, str]:
    """Every key as pydicom's value objects give it (the slow, reference path)."""
    ds = dcmread(path, stop_before_pixels=True, force=True)
    return {kw: _text(ds, kw) for kw in (*UID_KEYWORDS, *TEXT_KEYWORDS.values())}


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_raw_keys_match_decoded_values(path: Path) -> None:
    expected = _decoded(path)
    try:
        keys = read_keys(path)
    except ValueError:
        # Only objects without the UIDs an archive needs are refused.
        assert not all(expected[kw] for kw in UID_KEYWORDS)
        return
    row = keys.as_row()
    got = {kw: str(row[field]) for field, kw in TEXT_KEYWORDS.items()}
    got |= {"SOPInstanceUID": keys.sop_instance_uid, "SOPClassUID": keys.sop_class_uid,
            "StudyInstanceUID": keys.study_instance_uid,
            "SeriesInstanceUID": keys.series_instance_uid}
    assert got == expected
