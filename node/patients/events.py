"""The patient event: one accepted ADT message, immutable, with the one wire form it is
stored and replicated in."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from node.errors import NodeError, RemoteFailure

# The attributes an update may set (DICOM keywords), in the order they are presented.
ATTRIBUTES = ("PatientName", "PatientBirthDate", "PatientSex")


class PatientEventError(NodeError):
    """Root of the errors of node.patients."""


class BadPatientEvent(PatientEventError, RemoteFailure):
    """An event's wire form is not one we can read (from another member)."""


class Kind(enum.StrEnum):
    UPDATE = "update"  # A01/A04/A08: demographics of the patient
    MERGE = "merge"  # A40: the prior patient merged into the patient
    CHANGE_ID = "change-id"  # A47: the prior identifier renamed to the patient's


@dataclass(frozen=True, order=True)
class PatientKey:
    """A patient identifier with its issuer (PID-3.1 and PID-3.4): the same number from
    two assigning authorities is two patients."""

    id: str
    issuer: str = ""

    def __str__(self) -> str:
        return f"{self.id}^^^{self.issuer}" if self.issuer else self.id


@dataclass(frozen=True)
class PatientEvent:
    event_id: str  # sending application|facility|MSH-10: a repeat has the same one
    at: str  # the event's time, UTC ISO 8601: with event_id, the order of application
    kind: Kind
    patient: PatientKey  # PID-3: updated, the survivor of a merge, the new identifier
    prior: PatientKey | None = None  # MRG-1
    # DICOM keyword -> value ("" clears it); only what the message carried.
    attributes: dict[str, str] = field(default_factory=dict)
    origin: str = ""  # the node that accepted it (not part of the order)

    @property
    def order(self) -> tuple[str, str]:
        return (self.at, self.event_id)

    def to_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "at": self.at, "kind": str(self.kind),
                "patient": [self.patient.id, self.patient.issuer],
                "prior": None if self.prior is None else [self.prior.id, self.prior.issuer],
                "attributes": dict(self.attributes), "origin": self.origin}

    @classmethod
    def from_json(cls, data: Any) -> PatientEvent:
        try:
            prior = data["prior"]
            attributes = {str(k): str(v) for k, v in data["attributes"].items()
                          if k in ATTRIBUTES}
            return cls(str(data["event_id"]), str(data["at"]), Kind(data["kind"]),
                       PatientKey(str(data["patient"][0]), str(data["patient"][1])),
                       None if prior is None else PatientKey(str(prior[0]), str(prior[1])),
                       attributes, str(data.get("origin", "")))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise BadPatientEvent(f"not a patient event: {exc!r}") from None

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)
