"""DIMSE statuses (PS3.4 Annex B and C) and the small readings of a request that the
storage, query and retrieve handlers share."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from node.dicom.audit_hooks import requestor

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
ELEMENTS_DISCARDED = 0xB006
IDENTIFIER_MISMATCH = 0xA900
FIND_OUT_OF_RESOURCES = 0xA700
MOVE_DESTINATION_UNKNOWN = 0xA801

_PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
}


def status_dataset(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def model_root(sop_class_uid: str) -> str:
    return "PATIENT" if sop_class_uid in _PATIENT_ROOT else "STUDY"


def calling_aet(event: Event) -> str:
    return requestor(event.assoc)[0]


def exact_key(identifier: Dataset, keyword: str) -> str:
    """A key the requester asked for by value (not empty, not a wildcard), else ''."""
    value = str(identifier.get(keyword, "") or "").strip()
    return "" if any(c in value for c in "*?\\") else value
