"""Read the index keys of one Part 10 object from its header, never decoding pixel data.

Pure code: bytes or a path in, an :class:`InstanceKeys` out, or an :class:`InvalidDataset`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, fields
from typing import BinaryIO

from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError


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

# We store bytes as received: odd values are the sender's business, and pydicom's
# validation messages quote values (patient names, IDs) into the logs. Process-wide.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

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


def keys_from_dataset(ds: Dataset) -> InstanceKeys:
    try:
        missing = [kw for kw in _REQUIRED_UIDS if not _text(ds, kw)]
        if missing:
            raise InvalidDataset(f"missing {', '.join(missing)}")
        meta = getattr(ds, "file_meta", None)
        tsuid = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        if not tsuid:
            raise InvalidDataset("missing Transfer Syntax UID in the file meta information")
        values: dict[str, object] = {k: _text(ds, kw) for k, kw in TEXT_KEYWORDS.items()}
        rows, cols = ds.get("Rows"), ds.get("Columns")
        return InstanceKeys(
            sop_instance_uid=_text(ds, "SOPInstanceUID"),
            sop_class_uid=_text(ds, "SOPClassUID"),
            study_instance_uid=_text(ds, "StudyInstanceUID"),
            series_instance_uid=_text(ds, "SeriesInstanceUID"),
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
