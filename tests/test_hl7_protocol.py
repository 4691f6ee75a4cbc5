"""HL7 v2 framing, parsing and acknowledgements: pure code, no sockets."""

from __future__ import annotations

import hl7
import pytest

from node.hl7.ack import build_ack
from node.hl7.errors import AckCode, ErrorCode, FramingError, MessageRejected
from node.hl7.framing import MllpFramer, frame
from node.hl7.message import Header, hl7_time, parse, to_event
from node.patients.events import Kind, PatientEvent, PatientKey


def adt(trigger: str = "A08", control: str = "MSG1", pid: str = "123^^^HOSP",
        name: str = "Doe^John^Q", version: str = "2.5", charset: str = "",
        extra: str = "", message_type: str = "ADT", when: str = "20261203101500") -> str:
    msh = (f"MSH|^~\\&|HIS|HOSP|PACS|RAD|{when}||{message_type}^{trigger}|{control}|P|"
           f"{version}||||||{charset}")
    return "\r".join([msh.rstrip("|"), f"EVN|{trigger}|{when}",
                      f"PID|1||{pid}||{name}||19700101|M", *([extra] if extra else [])]) + "\r"


def rejected(raw: bytes) -> MessageRejected:
    with pytest.raises(MessageRejected) as caught:
        parse(raw)
    return caught.value


def test_framer_gives_whole_frames_across_reads_and_many_per_read() -> None:
    framer = MllpFramer()
    one, two = frame(b"MSH|a"), frame(b"MSH|b")
    stream = one + b"\r\n" + two
    got = [p for i in range(len(stream)) for p in framer.feed(stream[i:i + 1])]
    assert got == [b"MSH|a", b"MSH|b"]
    assert MllpFramer().feed(one + two) == [b"MSH|a", b"MSH|b"]


def test_framer_refuses_garbage_an_oversized_frame_and_a_cut_frame() -> None:
    with pytest.raises(FramingError):
        MllpFramer().feed(b"GET / HTTP/1.1\r\n")
    framer = MllpFramer(max_frame=100)
    with pytest.raises(FramingError):
        framer.feed(b"\x0b" + b"x" * 200)
    with pytest.raises(FramingError):  # a second start block before the end: cut short
        MllpFramer().feed(b"\x0bMSH|half\x0bMSH|whole\x1c\r")
    partial = MllpFramer()
    assert partial.feed(b"\x0bMSH|half") == [] and partial.partial


def test_an_update_is_read_with_its_issuer_time_and_demographics() -> None:
    message = parse(adt(pid="123^^^HOSP&1.2.3&ISO~999", extra="ZPI|custom").encode())
    assert message.kind is Kind.UPDATE
    assert message.patient == PatientKey("123", "HOSP&1.2.3&ISO")
    assert message.attributes == {"PatientName": "Doe^John^Q", "PatientBirthDate": "19700101",
                                  "PatientSex": "M"}
    assert message.at == "2026-12-03T10:15:00.000000+00:00"
    event = to_event(message, origin="node-a")
    assert event.event_id == "HIS|HOSP|MSG1"
    assert PatientEvent.from_json(event.to_json()) == event


def test_a_merge_names_prior_and_survivor() -> None:
    message = parse(adt("A40", extra="MRG|456^^^HOSP").encode())
    assert message.kind is Kind.MERGE
    assert message.prior == PatientKey("456", "HOSP")
    assert message.patient == PatientKey("123", "HOSP")


@pytest.mark.parametrize("charset,codec", [("8859/1", "latin-1"), ("UNICODE UTF-8", "utf-8"),
                                           ("", "latin-1")])
def test_the_charset_comes_from_msh_18(charset: str, codec: str) -> None:
    message = parse(adt(name="Müller^Zoë", charset=charset).encode(codec))
    assert message.attributes["PatientName"] == "Müller^Zoë"
    assert message.header.charset == charset


@pytest.mark.parametrize("raw,ack,code,location", [
    (adt(version="2.1").encode(), AckCode.REJECT, ErrorCode.UNSUPPORTED_VERSION, "MSH^1^12"),
    (adt(message_type="ORU", trigger="R01").encode(), AckCode.REJECT,
     ErrorCode.UNSUPPORTED_MESSAGE_TYPE, "MSH^1^9"),
    (adt(trigger="A99").encode(), AckCode.REJECT, ErrorCode.UNSUPPORTED_EVENT_CODE,
     "MSH^1^9^2"),
    (adt(pid="").encode(), AckCode.ERROR, ErrorCode.REQUIRED_FIELD_MISSING, "PID^1^3"),
    (adt("A40").encode(), AckCode.ERROR, ErrorCode.REQUIRED_FIELD_MISSING, "MRG^1^1"),
    (adt(charset="KLINGON").encode(), AckCode.REJECT, ErrorCode.DATA_TYPE, "MSH^1^18"),
    (b"\x00\xffnot hl7 at all", AckCode.REJECT, ErrorCode.SEGMENT_SEQUENCE, "MSH^1"),
    (adt(control="").encode(), AckCode.REJECT, ErrorCode.REQUIRED_FIELD_MISSING, "MSH^1^10"),
])
def test_bad_messages_are_rejected_with_code_and_location(
        raw: bytes, ack: AckCode, code: ErrorCode, location: str) -> None:
    problem = rejected(raw).problem
    assert (problem.ack, problem.code, problem.location) == (ack, code, location)


def test_acks_carry_msa_and_err_with_the_location() -> None:
    header = parse(adt(charset="8859/1", name="Müller").encode("latin-1")).header
    accept = hl7.parse(build_ack(header).decode("latin-1"))
    assert str(accept.segment("MSA")) == "MSA|AA|MSG1"
    assert accept.extract_field("MSH", 1, 5) == "HIS" and accept.extract_field("MSH", 1, 18) \
        == "8859/1"
    problem = rejected(adt(pid="").encode()).problem
    ack = hl7.parse(build_ack(Header(control_id="X1", trigger="A08"), problem).decode())
    assert ack.extract_field("MSA", 1, 1) == "AE"
    assert ack.extract_field("MSA", 1, 2) == "X1"
    assert "PID-3" in ack.extract_field("MSA", 1, 3)
    assert str(ack.segment("ERR")[2]) == "PID^1^3"
    assert ack.extract_field("ERR", 1, 3) == "101"
    assert ack.extract_field("MSH", 1, 9, 1, 1) == "ACK"


def test_hl7_times_are_read_as_utc() -> None:
    assert hl7_time("20261203101500+0100").isoformat() == "2026-12-03T09:15:00+00:00"
    assert hl7_time("202612").isoformat() == "2026-12-01T00:00:00+00:00"
    assert hl7_time("2026120310.5") is not None
    assert hl7_time("garbage") is None
