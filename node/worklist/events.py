"""The order event: one accepted order message (ORM^O01, OMI^O23), immutable, with the one
wire form it is stored (and, later, replicated) in."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from node.errors import NodeError, RemoteFailure
from node.patients.events import PatientKey

# The item fields an order may set (DICOM keywords), in the order they are presented.
FIELDS = ("RequestedProcedureID", "RequestedProcedureDescription",
          "ScheduledProcedureStepID", "ScheduledProcedureStepDescription", "Modality",
          "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
          "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
          "StudyInstanceUID", "PatientName", "PatientBirthDate", "PatientSex",
          "ReferringPhysicianName")


class OrderEventError(NodeError):
    """Root of the errors of node.worklist."""


class BadOrderEvent(OrderEventError, RemoteFailure):
    """An event's wire form is not one we can read."""


class Control(enum.StrEnum):
    """HL7 table 0119 order control codes taken."""

    NEW = "NW"
    CHANGE = "XO"
    STATUS = "SC"
    CANCEL = "CA"
    DISCONTINUE = "DC"


class Status(enum.StrEnum):
    """A worklist item's status (an SPS status, PS3.3 C.4.10, plus the order's end)."""

    SCHEDULED = "SCHEDULED"
    ARRIVED = "ARRIVED"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"
    CANCELLED = "CANCELLED"

    @property
    def hidden(self) -> bool:
        """Whether the worklist no longer shows an item in this status."""
        return self in (Status.COMPLETED, Status.DISCONTINUED, Status.CANCELLED)


@dataclass(frozen=True)
class OrderEvent:
    event_id: str  # sending application|facility|MSH-10: a repeat has the same one
    at: str  # the event's time, UTC ISO 8601: with event_id, the order of application
    control: Control
    accession: str  # OBR-18 / IPC-1: the item's key
    patient: PatientKey  # PID-3
    # DICOM keyword (FIELDS) -> value; only what the message carried.
    fields: dict[str, str] = field(default_factory=dict)
    status: Status | None = None  # SC: the status it reports (ORC-5)
    origin: str = ""  # the node that accepted it (not part of the order)

    @property
    def order(self) -> tuple[str, str]:
        return (self.at, self.event_id)

    def to_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "at": self.at, "control": str(self.control),
                "accession": self.accession,
                "patient": [self.patient.id, self.patient.issuer],
                "fields": dict(self.fields),
                "status": None if self.status is None else str(self.status),
                "origin": self.origin}

    @classmethod
    def from_json(cls, data: Any) -> OrderEvent:
        try:
            status = data["status"]
            fields = {str(k): str(v) for k, v in data["fields"].items() if k in FIELDS}
            return cls(str(data["event_id"]), str(data["at"]), Control(data["control"]),
                       str(data["accession"]),
                       PatientKey(str(data["patient"][0]), str(data["patient"][1])),
                       fields, None if status is None else Status(status),
                       str(data.get("origin", "")))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise BadOrderEvent(f"not an order event: {exc!r}") from None

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)
