"""Order messages (ORM^O01, OMI^O23) to typed orders: the fields IHE Scheduled Workflow
maps to a worklist item, each missing or bad one refused with its location.

One order group per message (the first ORC/OBR, with its IPC for OMI). Dates and times
are read as written (a worklist's schedule is the site's local time), not moved to UTC.

ORM^O01 (IHE RAD-4 / RAD-13): OBR-18 accession number, OBR-19 requested procedure id,
OBR-20 scheduled procedure step id, OBR-21 scheduled station AE title, OBR-24 modality,
OBR-4 procedure code^text, OBR-27.4 (else ORC-7.4, TQ1-7) start, OBR-34 the performing
technologist, OBR-16 the ordering (referring) physician, ZDS-1 the Study Instance UID.
OMI^O23: the same, with IPC-1 accession, IPC-2 requested procedure id, IPC-3 study UID,
IPC-4 step id, IPC-5 modality, IPC-9 station AE title taking precedence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import hl7
from pydicom.uid import generate_uid

from node.hl7.errors import ErrorCode, error, reject
from node.hl7.message import (
    AdtMessage,
    Header,
    check_header,
    demographics,
    event_time,
    field_value,
    parse_message,
    patient_key,
)
from node.patients.events import PatientKey
from node.worklist.events import Control, OrderEvent, Status

ORDER_TRIGGERS = {"ORM": "O01", "OMI": "O23"}
# ORC-5 (HL7 table 0038) in a status change -> the item's status.
ORDER_STATUS = {"SC": Status.SCHEDULED, "IP": Status.IN_PROGRESS, "CM": Status.COMPLETED,
                "CA": Status.CANCELLED, "DC": Status.DISCONTINUED}
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # no backslash, no control


@dataclass(frozen=True)
class OrderMessage:
    header: Header
    control: Control
    accession: str
    patient: PatientKey
    at: str
    fields: dict[str, str] = field(default_factory=dict)
    status: Status | None = None

    @property
    def sender(self) -> str:
        return f"{self.header.sending_application}|{self.header.sending_facility}"


def parse_any(header: Header, msg: hl7.Message) -> AdtMessage | OrderMessage:
    """An ADT message or an order, by MSH-9."""
    if field_value(msg, "MSH", 9) in ORDER_TRIGGERS:
        return parse_order(header, msg)
    return parse_message(header, msg)


def _has(msg: hl7.Message, segment: str) -> bool:
    try:
        msg.segment(segment)
    except (KeyError, IndexError):
        return False
    return True


def _person(msg: hl7.Message, segment: str, number: int, nested: bool) -> str:
    """A name as DICOM PN (family^given): from an XCN's components 2 and 3, or, nested
    (OBR-34's NDL), from the subcomponents 2 and 3 of its first component."""
    parts = ([field_value(msg, segment, number, 1, s) for s in (2, 3)] if nested
             else [field_value(msg, segment, number, c) for c in (2, 3)])
    return "^".join(parts).rstrip("^")


def _start(msg: hl7.Message) -> tuple[str, str]:
    for segment, number, component in (("OBR", 27, 4), ("ORC", 7, 4), ("TQ1", 7, 1)):
        value = field_value(msg, segment, number, component)
        if value:
            digits = re.split(r"[+-]", value, maxsplit=1)[0]
            whole = digits.split(".", 1)[0]
            if len(whole) < 8 or not whole.isdigit():
                raise error(ErrorCode.DATA_TYPE, f"{segment}-{number} is not a date/time",
                            f"{segment}^1^{number}^{component}")
            return whole[:8], whole[8:14]
    return "", ""


def parse_order(header: Header, msg: hl7.Message) -> OrderMessage:
    """An order we take, or :class:`MessageRejected` with why (AR or AE)."""
    check_header(header, msg)
    message_type = field_value(msg, "MSH", 9)
    if header.trigger != ORDER_TRIGGERS[message_type]:
        raise reject(ErrorCode.UNSUPPORTED_EVENT_CODE,
                     f"{message_type} event {header.trigger or '(none)'!r} is not taken",
                     "MSH^1^9^2")
    omi = message_type == "OMI"
    for segment in ("PID", "ORC", "OBR", *(("IPC",) if omi else ())):
        if not _has(msg, segment):
            raise reject(ErrorCode.SEGMENT_SEQUENCE, f"{message_type} without {segment}",
                         f"{segment}^1")
    patient = patient_key(msg, "PID", 3)
    if patient is None:
        raise error(ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 (patient identifier) is empty",
                    "PID^1^3")
    code = field_value(msg, "ORC", 1)
    if not code:
        raise error(ErrorCode.REQUIRED_FIELD_MISSING, "ORC-1 (order control) is empty",
                    "ORC^1^1")
    try:
        control = Control(code)
    except ValueError:
        raise error(ErrorCode.DATA_TYPE, f"order control {code!r} is not taken",
                    "ORC^1^1") from None
    accession = (field_value(msg, "IPC", 1) if omi else "") or field_value(msg, "OBR", 18)
    if not accession:
        where = "IPC^1^1" if omi else "OBR^1^18"
        raise error(ErrorCode.REQUIRED_FIELD_MISSING, "the accession number is empty", where)
    if len(accession) > 16:
        raise error(ErrorCode.DATA_TYPE, "the accession number is longer than 16",
                    "IPC^1^1" if omi else "OBR^1^18")
    status = None
    if control is Control.STATUS:
        state = field_value(msg, "ORC", 5)
        status = ORDER_STATUS.get(state)
        if status is None:
            raise error(ErrorCode.DATA_TYPE, f"order status {state or '(none)'!r} is not taken",
                        "ORC^1^5")
    at = event_time(msg)
    fields = _fields(msg, omi) if control in (Control.NEW, Control.CHANGE) else {}
    if control is Control.NEW and not fields.get("StudyInstanceUID"):
        fields["StudyInstanceUID"] = generate_uid(
            entropy_srcs=[header.sending_application, header.sending_facility,
                          header.control_id, accession])
    return OrderMessage(header, control, accession, patient, at, fields, status)


def _fields(msg: hl7.Message, omi: bool) -> dict[str, str]:
    found: dict[str, str] = {}

    def take(keyword: str, *sources: tuple[str, int, int]) -> None:
        for segment, number, component in sources:
            value = field_value(msg, segment, number, component)
            if value:
                found[keyword] = value
                return

    ipc = omi
    take("RequestedProcedureID", *((("IPC", 2, 1),) if ipc else ()), ("OBR", 19, 1))
    take("ScheduledProcedureStepID", *((("IPC", 4, 1),) if ipc else ()), ("OBR", 20, 1))
    take("ScheduledStationAETitle", *((("IPC", 9, 1),) if ipc else ()), ("OBR", 21, 1))
    take("Modality", *((("IPC", 5, 1),) if ipc else ()), ("OBR", 24, 1))
    take("RequestedProcedureDescription", ("OBR", 4, 2), ("OBR", 4, 1))
    take("ScheduledProcedureStepDescription", ("OBR", 4, 2), ("OBR", 4, 1))
    uid_at = "IPC^1^3" if ipc else "ZDS^1^1"
    take("StudyInstanceUID", *((("IPC", 3, 1),) if ipc else (("ZDS", 1, 1),)))
    uid = found.get("StudyInstanceUID", "")
    if uid and (len(uid) > 64 or not _UID.match(uid)):
        raise error(ErrorCode.DATA_TYPE, "the Study Instance UID is not a UID", uid_at)
    station = found.get("ScheduledStationAETitle", "")
    if station and not _AE_TITLE.match(station):
        raise error(ErrorCode.DATA_TYPE, "the scheduled station is not an AE title",
                    "IPC^1^9" if ipc else "OBR^1^21")
    modality = found.get("Modality", "")
    if modality and (len(modality) > 16 or not re.match(r"^[A-Z0-9_ ]+$", modality)):
        raise error(ErrorCode.DATA_TYPE, "the modality is not a DICOM modality",
                    "IPC^1^5" if ipc else "OBR^1^24")
    date, time = _start(msg)
    if date:
        found["ScheduledProcedureStepStartDate"] = date
        if time:
            found["ScheduledProcedureStepStartTime"] = time
    performer = _person(msg, "OBR", 34, nested=True)
    if performer:
        found["ScheduledPerformingPhysicianName"] = performer
    referring = _person(msg, "OBR", 16, nested=False)
    if referring:
        found["ReferringPhysicianName"] = referring
    for keyword, value in demographics(msg).items():
        if value:
            found[keyword] = value
    return found


def to_order_event(message: OrderMessage, origin: str = "") -> OrderEvent:
    """The immutable event an accepted order becomes; a repeat gets the same id."""
    return OrderEvent(f"{message.sender}|{message.header.control_id}", message.at,
                      message.control, message.accession, message.patient,
                      dict(message.fields), message.status, origin)
