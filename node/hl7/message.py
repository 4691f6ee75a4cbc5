"""One received HL7 v2 message, from its bytes to a typed ADT event; the one place
messages are parsed.

The charset comes from MSH-18, read from the raw bytes before anything is decoded (the
MSH segment up to MSH-18 is ASCII by rule). Parsing is python-hl7's, schema-less: Z-
segments and fields we do not read are kept in :attr:`Parsed.message` untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import hl7

from node.hl7.errors import ErrorCode, MessageRejected, error, reject
from node.patients.events import Kind, PatientEvent, PatientKey

# MSH-18 -> Python codec. Absent: ASCII by the standard, but senders that leave it out
# still send Latin-1 or UTF-8 names, so those are tried in turn (never a hang, never a
# crash on a byte above 0x7F).
CHARSETS = {
    "ASCII": "ascii", "8859/1": "latin-1", "8859/2": "iso8859-2", "8859/3": "iso8859-3",
    "8859/4": "iso8859-4", "8859/5": "iso8859-5", "8859/6": "iso8859-6",
    "8859/7": "iso8859-7", "8859/8": "iso8859-8", "8859/9": "iso8859-9",
    "8859/15": "iso8859-15", "UNICODE UTF-8": "utf-8", "UNICODE": "utf-8",
    "ISO IR192": "utf-8", "ISO IR6": "ascii", "ISO IR100": "latin-1",
}
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1",
            "2.8.2", "2.9")
PROCESSING_IDS = ("P", "D", "T")


TRIGGERS = {"A01": Kind.UPDATE, "A04": Kind.UPDATE, "A08": Kind.UPDATE,
            "A40": Kind.MERGE, "A47": Kind.CHANGE_ID}


@dataclass(frozen=True)
class Header:
    """What an acknowledgement needs of the message, as far as it could be read."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""
    trigger: str = ""
    version: str = "2.5"
    charset: str = ""  # MSH-18 as sent; the ACK uses the same
    codec: str = "ascii"


@dataclass(frozen=True)
class AdtMessage:
    header: Header
    kind: Kind
    patient: PatientKey
    at: str  # the event's time, UTC, ISO 8601 (EVN-2, else MSH-7): the order of updates
    # DICOM keyword -> value ("" clears it); only the fields the message carries.
    attributes: dict[str, str] = field(default_factory=dict)
    prior: PatientKey | None = None  # MRG-1, for a merge or an identifier change

    @property
    def sender(self) -> str:
        return f"{self.header.sending_application}|{self.header.sending_facility}"


def charset_of(raw: bytes) -> tuple[str, str]:
    """MSH-18 as sent and the codec for it; raises AR for a charset we do not know."""
    first = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 8:
        raise reject(ErrorCode.SEGMENT_SEQUENCE, "the message does not begin with MSH",
                     "MSH^1")
    parts = first.split(first[3:4])
    declared = parts[17].decode("ascii", "replace").strip() if len(parts) > 17 else ""
    # Only the first repetition names the message's own encoding.
    declared = declared.split(chr(first[5]) if len(first) > 5 else "~", 1)[0]
    if not declared:
        return "", ""
    codec = CHARSETS.get(declared.upper())
    if codec is None:
        raise reject(ErrorCode.DATA_TYPE, f"character set {declared!r} is not supported",
                     "MSH^1^18")
    return declared, codec


def decode(raw: bytes) -> tuple[str, str, str]:
    """The text of a message, with its MSH-18 and the codec used."""
    declared, codec = charset_of(raw)
    for candidate in ([codec] if codec else ["ascii", "utf-8", "latin-1"]):
        try:
            return raw.decode(candidate), declared, candidate
        except UnicodeDecodeError:
            continue
    raise reject(ErrorCode.DATA_TYPE, f"the message is not valid {declared}", "MSH^1^18")


def field_value(msg: hl7.Message, segment: str, number: int, component: int = 1,
           sub: int = 1) -> str:
    try:
        return str(msg.extract_field(segment, 1, number, 1, component, sub)).strip()
    except (KeyError, IndexError):
        return ""


def read_header(raw: bytes) -> tuple[Header, hl7.Message]:
    """The header of a message (for its ACK, whatever else is wrong) and the parsed
    message; raises AR when there is no header to speak of."""
    text, declared, codec = decode(raw)
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    try:
        msg = hl7.parse(text)
        msg.segment("MSH")
    except (KeyError, IndexError, ValueError, hl7.ParseException) as exc:
        raise reject(ErrorCode.SEGMENT_SEQUENCE, f"unreadable message: {exc}", "MSH^1") \
            from None
    version = field_value(msg, "MSH", 12)
    header = Header(
        sending_application=field_value(msg, "MSH", 3), sending_facility=field_value(msg, "MSH", 4),
        receiving_application=field_value(msg, "MSH", 5),
        receiving_facility=field_value(msg, "MSH", 6), control_id=field_value(msg, "MSH", 10),
        trigger=field_value(msg, "MSH", 9, 2), version=version or "2.5", charset=declared,
        codec=codec)
    return header, msg


def parse(raw: bytes) -> AdtMessage:
    """A message we take, or :class:`MessageRejected` with why (AR or AE)."""
    header, msg = read_header(raw)
    return parse_message(header, msg)


def check_header(header: Header, msg: hl7.Message) -> None:
    """What every message we take must have in its MSH: a control id, a version and a
    processing id we know; raises AR otherwise."""
    if not header.control_id:
        raise reject(ErrorCode.REQUIRED_FIELD_MISSING, "MSH-10 (message control id) is empty",
                     "MSH^1^10")
    version = field_value(msg, "MSH", 12)
    if version not in VERSIONS:
        raise reject(ErrorCode.UNSUPPORTED_VERSION,
                     f"version {version or '(none)'!r} is not one of {', '.join(VERSIONS)}",
                     "MSH^1^12")
    processing = field_value(msg, "MSH", 11)
    if processing and processing not in PROCESSING_IDS:
        raise reject(ErrorCode.UNSUPPORTED_PROCESSING_ID,
                     f"processing id {processing!r} is not taken", "MSH^1^11")


def parse_message(header: Header, msg: hl7.Message) -> AdtMessage:
    check_header(header, msg)
    message_type = field_value(msg, "MSH", 9)
    if message_type != "ADT":
        raise reject(ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
                     f"message type {message_type or '(none)'!r} is not taken", "MSH^1^9")
    kind = TRIGGERS.get(header.trigger)
    if kind is None:
        raise reject(ErrorCode.UNSUPPORTED_EVENT_CODE,
                     f"ADT event {header.trigger or '(none)'!r} is not taken", "MSH^1^9^2")
    patient = patient_key(msg, "PID", 3)
    if patient is None:
        raise error(ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 (patient identifier) is empty",
                    "PID^1^3")
    prior = None
    if kind is not Kind.UPDATE:
        prior = patient_key(msg, "MRG", 1)
        if prior is None:
            raise error(ErrorCode.REQUIRED_FIELD_MISSING,
                        "MRG-1 (prior patient identifier) is empty", "MRG^1^1")
        if prior == patient:
            raise error(ErrorCode.DUPLICATE_KEY, "MRG-1 names the PID-3 patient itself",
                        "MRG^1^1")
    at = event_time(msg)
    return AdtMessage(header, kind, patient, at, demographics(msg), prior)


def patient_key(msg: hl7.Message, segment: str, number: int) -> PatientKey | None:
    ident = field_value(msg, segment, number)
    if not ident:
        return None
    # The assigning authority (HD): namespace, universal id, its type.
    issuer = "&".join(field_value(msg, segment, number, 4, s) for s in (1, 2, 3)).rstrip("&")
    return PatientKey(ident, issuer)


def _present(msg: hl7.Message, number: int) -> str | None:
    """PID-n as sent: None when absent (no change), "" for HL7's null ``""`` (clear)."""
    try:
        raw = str(msg.segment("PID")[number]).strip()
    except (KeyError, IndexError):
        return None
    if raw == "":
        return None
    return "" if raw == '""' else raw


def demographics(msg: hl7.Message) -> dict[str, str]:
    attributes: dict[str, str] = {}
    if _present(msg, 5) is not None:
        # XPN: family, given, middle, suffix, prefix; DICOM PN: family, given, middle,
        # prefix, suffix.
        family, given, middle, suffix, prefix = (field_value(msg, "PID", 5, c) for c in range(1, 6))
        name = "^".join((family, given, middle, prefix, suffix)).rstrip("^")
        attributes["PatientName"] = "" if name == '""' else name
    birth = _present(msg, 7)
    if birth is not None:
        attributes["PatientBirthDate"] = birth[:8] if birth else ""
    sex = _present(msg, 8)
    if sex is not None:
        attributes["PatientSex"] = {"M": "M", "F": "F", "": ""}.get(sex.upper(), "O")
    return attributes


def hl7_time(value: str) -> datetime | None:
    """An HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]) as an aware datetime; no
    offset is read as UTC."""
    text = value.strip()
    offset = timedelta(0)
    for sign in ("+", "-"):
        if sign in text[4:]:
            text, _, zone = text.rpartition(sign)
            if len(zone) == 4 and zone.isdigit():
                minutes = int(zone[:2]) * 60 + int(zone[2:])
                offset = timedelta(minutes=minutes if sign == "+" else -minutes)
            break
    whole, _, fraction = text.partition(".")
    if len(whole) < 4 or not whole.isdigit():
        return None
    padded = (whole + "0101000000"[len(whole) - 4:])[:14] if len(whole) < 14 else whole[:14]
    try:
        naive = datetime.strptime(padded, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    micro = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    return (naive.replace(microsecond=micro, tzinfo=UTC) - offset)


def event_time(msg: hl7.Message) -> str:
    for segment, number in (("EVN", 2), ("MSH", 7)):
        when = hl7_time(field_value(msg, segment, number))
        if when is not None:
            return when.isoformat(timespec="microseconds")
    raise error(ErrorCode.REQUIRED_FIELD_MISSING, "MSH-7 (date/time of message) is empty",
                "MSH^1^7")




def to_event(message: AdtMessage, origin: str = "") -> PatientEvent:
    """The immutable event an accepted message becomes; a repeat gets the same id."""
    return PatientEvent(f"{message.sender}|{message.header.control_id}", message.at,
                        message.kind, message.patient, message.prior,
                        dict(message.attributes), origin)


__all__ = ["AdtMessage", "Header", "Kind", "MessageRejected", "PatientKey", "parse", "to_event"]
