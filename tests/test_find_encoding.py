"""C-FIND identifiers written directly are the bytes pydicom writes for the same answer,
in both little-endian transfer syntaxes, and anything unusual falls back to pydicom."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom.dsutils import encode

from node.dicom.find_encoding import EncodedIdentifier, IdentifierLayout, layout_for
from node.query import parse_identifier, response_identifier


def _request(level: str, *keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key in keys:
        setattr(ds, key, "")
    ds.RetrieveAETitle = ""
    ds.InstanceAvailability = ""
    ds.ReferencedStudySequence = []  # unknown to the index: answered empty
    return ds


STUDY_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyTime",
              "AccessionNumber", "StudyDescription", "ReferringPhysicianName",
              "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyInstanceUID")
ROWS: list[dict[str, Any]] = [
    {"PatientName": "Müller^Zoë", "PatientID": "P1", "StudyDate": "20200101",
     "StudyTime": "1015", "AccessionNumber": "A1", "StudyDescription": "CT head",
     "ReferringPhysicianName": "Dr^Who", "ModalitiesInStudy": "CT\\MR",
     "NumberOfStudyRelatedInstances": 10, "StudyInstanceUID": "1.2.3"},
    {"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう", "PatientID": "P22",
     "StudyDate": None, "NumberOfStudyRelatedInstances": 0, "StudyInstanceUID": "1.2.34"},
    {"PatientName": "", "StudyDescription": "odd", "StudyInstanceUID": "1.2.345"},
    {"StudyInstanceUID": "1.2"},
]


@pytest.mark.parametrize("implicit", [True, False])
def test_study_answers_are_the_bytes_pydicom_writes(implicit: bool) -> None:
    query = parse_identifier(_request("STUDY", *STUDY_KEYS))
    layout = IdentifierLayout(query, "PACSMESH", implicit)
    for row in ROWS:
        expected = encode(response_identifier(query, row, "PACSMESH"), implicit, True)
        assert layout.encode(row) == expected, row


@pytest.mark.parametrize("implicit", [True, False])
def test_image_answers_with_numbers_are_the_bytes_pydicom_writes(implicit: bool) -> None:
    query = parse_identifier(_request("IMAGE", "StudyInstanceUID", "SeriesInstanceUID",
                                      "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
                                      "NumberOfFrames", "SOPClassUID"))
    layout = IdentifierLayout(query, "PACSMESH", implicit)
    for row in ({"SOPInstanceUID": "1.2.3.4", "InstanceNumber": "7", "Rows": 512,
                 "Columns": 511, "NumberOfFrames": "", "SOPClassUID": "1.2.840.10008.5.1"},
                {"SOPInstanceUID": "1.2.3.45", "Rows": None, "Columns": 0}):
        expected = encode(response_identifier(query, row, "PACSMESH"), implicit, True)
        assert layout.encode(row) == expected, row


def test_what_it_cannot_write_exactly_falls_back_to_the_dataset() -> None:
    query = parse_identifier(_request("STUDY", *STUDY_KEYS))
    layout = IdentifierLayout(query, "PACSMESH", implicit=True)
    odd = {"StudyInstanceUID": "1.2", "StudyDate": "2020ü"}  # not ASCII in a DA
    assert layout.encode(odd) is None
    fallback = layout.identifier(odd)
    assert not isinstance(fallback, EncodedIdentifier)
    assert fallback.StudyInstanceUID == "1.2"
    assert isinstance(layout.identifier(ROWS[0]), EncodedIdentifier)
    assert layout_for(query, "PACSMESH", DeflatedExplicitVRLittleEndian) is None
    assert layout_for(query, "PACSMESH", ExplicitVRLittleEndian) is not None
