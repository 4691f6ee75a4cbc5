"""Read the index keys of one Part 10 object from its header, never decoding pixel data.

Pure code: bytes or a path in, an :class:`InstanceKeys` out, or an :class:`InvalidDataset`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import BinaryIO

from pydicom import dcmread
from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.dicom.patches import quiet_pydicom_reading


class InvalidDataset(ValueError):
    """The object cannot be stored: not DICOM, or without the UIDs an archive needs."""


@dataclass(frozen=True)
class InstanceKeys:
    """What the index keeps of one instance: the query keys of every level."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician_name: str = ""
    modality: str = ""
    series_number: str = ""
    series_description: str = ""
    series_date: str = ""
    series_time: str = ""
    body_part_examined: str = ""
    instance_number: str = ""
    rows: int | None = None
    columns: int | None = None
    number_of_frames: str = ""

    def as_row(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# dataclass field -> DICOM keyword, for the text attributes copied as they are.
TEXT_KEYWORDS: dict[str, str] = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "accession_number": "AccessionNumber",
    "study_id": "StudyID",
    "study_description": "StudyDescription",
    "referring_physician_name": "ReferringPhysicianName",
    "modality": "Modality",
    "series_number": "SeriesNumber",
    "series_description": "SeriesDescription",
    "series_date": "SeriesDate",
    "series_time": "SeriesTime",
    "body_part_examined": "BodyPartExamined",
    "instance_number": "InstanceNumber",
    "number_of_frames": "NumberOfFrames",
}

# Process-wide, for every process that reads a header, node or not.
quiet_pydicom_reading()

_SPECIFIC_CHARACTER_SET = 0x00080005
# Single-byte and UTF-8 repertoires (PS3.3 C.12.1.1.2) without code extensions.
_CODECS = {
    "": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 101": "iso8859_2",
    "ISO_IR 109": "iso8859_3", "ISO_IR 110": "iso8859_4", "ISO_IR 144": "iso8859_5",
    "ISO_IR 127": "iso8859_6", "ISO_IR 126": "iso8859_7", "ISO_IR 138": "iso8859_8",
    "ISO_IR 148": "iso8859_9", "ISO_IR 203": "iso8859_15", "ISO_IR 166": "tis_620",
    "ISO_IR 192": "utf-8",
}
_REQUIRED_UIDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or getattr(value, "VM", 1) > 1:
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def read_header(source: bytes | str | os.PathLike[str] | BinaryIO) -> Dataset:
    """Parse file meta and data set up to (not including) pixel data."""
    fp = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    try:
        return dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise InvalidDataset(f"not a DICOM Part 10 object: {exc}") from None
    except Exception as exc:  # pydicom raises many types on truncated or garbled input
        raise InvalidDataset(f"unreadable DICOM data set: {type(exc).__name__}: {exc}") from None


def _raw_reader(ds: Dataset) -> Callable[[str], str]:
    """``_text`` for ``ds``, reading single values straight from the undecoded element.

    pydicom turns each element into a value object (a PersonName, an IS...) on first
    access, which costs more than parsing the header. A single value in a character set
    Python decodes by itself is the decoded bytes, trimmed; anything else (several values,
    name groups, ISO 2022 escapes, an element already decoded) goes through pydicom.
    ``tests/test_dicom_header.py`` holds both ways equal on every sample file.
    """
    charset = ds.get_item(_SPECIFIC_CHARACTER_SET)
    codec: str | None = "latin-1"  # the default repertoire is ASCII; be lenient
    if charset is not None:
        # pydicom has usually decoded this one already, to learn the data set's charset.
        raw = charset.value
        name = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        codec = _CODECS.get(name.strip(" \0")) if isinstance(name, str) else None

    def text(keyword: str) -> str:
        elem = ds.get_item(keyword_dict[keyword])
        if elem is None:
            return ""
        value = elem.value
        # Several values, or a name with ideographic/phonetic groups: pydicom's rules.
        if codec is None or not isinstance(value, bytes) or b"\\" in value or b"=" in value:
            return _text(ds, keyword)
        return value.decode(codec, "replace").strip(" \0")

    return text


def keys_from_dataset(ds: Dataset) -> InstanceKeys:
    try:
        text = _raw_reader(ds)
        missing = [kw for kw in _REQUIRED_UIDS if not text(kw)]
        if missing:
            raise InvalidDataset(f"missing {', '.join(missing)}")
        meta = getattr(ds, "file_meta", None)
        tsuid = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        if not tsuid:
            raise InvalidDataset("missing Transfer Syntax UID in the file meta information")
        values: dict[str, object] = {k: text(kw) for k, kw in TEXT_KEYWORDS.items()}
        rows, cols = ds.get("Rows"), ds.get("Columns")
        return InstanceKeys(
            sop_instance_uid=text("SOPInstanceUID"),
            sop_class_uid=text("SOPClassUID"),
            study_instance_uid=text("StudyInstanceUID"),
            series_instance_uid=text("SeriesInstanceUID"),
            transfer_syntax_uid=tsuid,
            rows=int(rows) if isinstance(rows, int) else None,
            columns=int(cols) if isinstance(cols, int) else None,
            **values,  # type: ignore[arg-type]
        )
    except InvalidDataset:
        raise
    except Exception as exc:  # a value pydicom cannot convert (bad charset, bad VR)
        raise InvalidDataset(f"unreadable attribute: {type(exc).__name__}: {exc}") from None


def read_keys(source: bytes | str | os.PathLike[str] | BinaryIO) -> InstanceKeys:
    return keys_from_dataset(read_header(source))
