"""HL7 orders (ORM^O01, OMI^O23) to worklist items: typed parse with the field's location
on every refusal, the pure resolution of order events (any arrival order, one answer),
the store over a real SQLite index, and python-hl7 sending over real MLLP."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.hl7.errors import AckCode, MessageRejected
from node.hl7.intake import applier
from node.hl7.listener import Hl7Listener, ListenerSettings
from node.hl7.message import read_header
from node.hl7.orders import OrderMessage, parse_any, to_order_event
from node.index import Index
from node.patients.events import PatientKey
from node.patients.store import PatientStore, index_knows
from node.worklist.current import resolve
from node.worklist.events import BadOrderEvent, Control, OrderEvent, Status
from node.worklist.store import OrderRefused, WorklistStore
from tests.hl7_support import His, ack_code, err_location

WHEN = "20261203101500"
UID = "1.2.826.0.1.3680043.8.498.1"


def orm(control: str, msg_id: str, accession: str = "ACC1", *, pid: str = "P1^^^HOSP",
        status: str = "", zds: str = UID, station: str = "CT01", modality: str = "CT",
        start: str = "202612031130", when: str = WHEN, trigger: str = "O01") -> str:
    segments = [f"MSH|^~\\&|RIS|HOSP|PACS|RAD|{when}||ORM^{trigger}|{msg_id}|P|2.5",
                f"PID|1||{pid}||Roe^Richard||19700101|M",
                f"ORC|{control}|PL1|FL1||{status}",
                obr({4: "CTHEAD^CT head without contrast", 16: "123^Welby^Marcus",
                     18: accession, 19: "RP1", 20: "SPS1", 21: station, 24: modality,
                     27: f"^^^{start}", 34: "12&Tech&Tina"})]
    if zds:
        segments.append(f"ZDS|{zds}^PACS^Application^DICOM")
    return "\r".join(segments) + "\r"


def obr(fields: dict[int, str]) -> str:
    values = ["OBR", "1", "PL1", "FL1"] + [""] * 31
    for number, value in fields.items():
        values[number] = value
    return "|".join(values).rstrip("|")


def omi(control: str, msg_id: str, accession: str = "ACC9") -> str:
    segments = [f"MSH|^~\\&|RIS|HOSP|PACS|RAD|{WHEN}||OMI^O23^OMI_O23|{msg_id}|P|2.5",
                "PID|1||P2^^^HOSP||Doe^Jane||19800202|F",
                f"ORC|{control}|PL2|FL2", "TQ1|1||||||20261204083000",
                "OBR|1|PL2|FL2|MRKNEE^MR knee",
                f"IPC|{accession}|RP9|{UID}.9|SPS9|MR||||MR01"]
    return "\r".join(segments) + "\r"


def parsed(text: str) -> OrderMessage:
    header, msg = read_header(text.encode())
    message = parse_any(header, msg)
    assert isinstance(message, OrderMessage)
    return message


def refused(text: str) -> tuple[AckCode, int, str]:
    with pytest.raises(MessageRejected) as caught:
        parsed(text)
    problem = caught.value.problem
    return problem.ack, int(problem.code), problem.location


def test_a_new_orm_order_maps_to_a_scheduled_step() -> None:
    order = parsed(orm("NW", "M1"))
    assert (order.control, order.accession, order.patient) == \
        (Control.NEW, "ACC1", PatientKey("P1", "HOSP"))
    assert order.fields == {
        "RequestedProcedureID": "RP1", "ScheduledProcedureStepID": "SPS1",
        "ScheduledStationAETitle": "CT01", "Modality": "CT",
        "RequestedProcedureDescription": "CT head without contrast",
        "ScheduledProcedureStepDescription": "CT head without contrast",
        "StudyInstanceUID": UID, "ScheduledProcedureStepStartDate": "20261203",
        "ScheduledProcedureStepStartTime": "1130",
        "ScheduledPerformingPhysicianName": "Tech^Tina",
        "ReferringPhysicianName": "Welby^Marcus", "PatientName": "Roe^Richard",
        "PatientBirthDate": "19700101", "PatientSex": "M"}
    assert order.at == "2026-12-03T10:15:00.000000+00:00"


def test_without_zds_a_study_uid_is_generated_the_same_for_a_repeat() -> None:
    first = parsed(orm("NW", "M1", zds=""))
    again = parsed(orm("NW", "M1", zds=""))
    other = parsed(orm("NW", "M2", "ACC2", zds=""))
    uid = first.fields["StudyInstanceUID"]
    assert uid.startswith("1.2.826.0.1.3680043.8.498.") and len(uid) <= 64
    assert again.fields["StudyInstanceUID"] == uid != other.fields["StudyInstanceUID"]


def test_an_omi_order_takes_ipc_and_tq1() -> None:
    order = parsed(omi("NW", "O1"))
    assert order.accession == "ACC9"
    assert {k: order.fields[k] for k in ("RequestedProcedureID", "StudyInstanceUID",
                                         "ScheduledProcedureStepID", "Modality",
                                         "ScheduledStationAETitle",
                                         "ScheduledProcedureStepStartDate",
                                         "ScheduledProcedureStepStartTime")} == {
        "RequestedProcedureID": "RP9", "StudyInstanceUID": f"{UID}.9",
        "ScheduledProcedureStepID": "SPS9", "Modality": "MR",
        "ScheduledStationAETitle": "MR01", "ScheduledProcedureStepStartDate": "20261204",
        "ScheduledProcedureStepStartTime": "083000"}


def test_status_cancel_and_discontinue_carry_no_fields() -> None:
    assert parsed(orm("SC", "M2", status="IP")).status is Status.IN_PROGRESS
    assert parsed(orm("CA", "M3")).fields == {}
    assert parsed(orm("DC", "M4")).control is Control.DISCONTINUE


@pytest.mark.parametrize(("text", "expected"), [
    (orm("NW", "M1", accession=""), (AckCode.ERROR, 101, "OBR^1^18")),
    (orm("NW", "M1", accession="A" * 17), (AckCode.ERROR, 102, "OBR^1^18")),
    (omi("NW", "O1", accession=""), (AckCode.ERROR, 101, "IPC^1^1")),
    (orm("NW", "M1", pid=""), (AckCode.ERROR, 101, "PID^1^3")),
    (orm("", "M1"), (AckCode.ERROR, 101, "ORC^1^1")),
    (orm("RP", "M1"), (AckCode.ERROR, 102, "ORC^1^1")),
    (orm("SC", "M1", status="ZZ"), (AckCode.ERROR, 102, "ORC^1^5")),
    (orm("NW", "M1", zds="1.2.x"), (AckCode.ERROR, 102, "ZDS^1^1")),
    (orm("NW", "M1", station="S" * 17), (AckCode.ERROR, 102, "OBR^1^21")),
    (orm("NW", "M1", modality="c t"), (AckCode.ERROR, 102, "OBR^1^24")),
    (orm("NW", "M1", start="2026"), (AckCode.ERROR, 102, "OBR^1^27^4")),
    (orm("NW", "M1", trigger="O02"), (AckCode.REJECT, 201, "MSH^1^9^2")),
    (orm("NW", "")[:0] + orm("NW", "M1").replace("|M1|P|", "||P|"),
     (AckCode.REJECT, 101, "MSH^1^10")),
    ("\r".join(s for s in orm("NW", "M1").split("\r") if not s.startswith("OBR")),
     (AckCode.REJECT, 100, "OBR^1")),
])
def test_bad_orders_are_refused_with_the_fields_location(
        text: str, expected: tuple[AckCode, int, str]) -> None:
    assert refused(text) == expected


P = PatientKey("P1", "HOSP")


def event(n: int, control: Control, at: str, accession: str = "A1",
          status: Status | None = None, **fields: str) -> OrderEvent:
    return OrderEvent(f"RIS|HOSP|{n}", at, control, accession, P, fields, status)


HISTORY = [
    event(1, Control.NEW, "2026-12-03T08:00", Modality="CT", ScheduledStationAETitle="CT01"),
    event(2, Control.CHANGE, "2026-12-03T08:05", ScheduledStationAETitle="CT02"),
    event(3, Control.STATUS, "2026-12-03T08:10", status=Status.IN_PROGRESS),
    event(4, Control.NEW, "2026-12-03T08:11", "A2", Modality="MR"),
    event(5, Control.CANCEL, "2026-12-03T08:20", "A2"),
    event(6, Control.CHANGE, "2026-12-03T08:30", "A2", Modality="CT"),  # after the end
    event(7, Control.NEW, "2026-12-03T08:40", "A3"),
    event(8, Control.DISCONTINUE, "2026-12-03T08:50", "A3"),
]


def test_resolution_applies_changes_statuses_and_ends() -> None:
    items = resolve(HISTORY)
    assert items["A1"].fields == {"Modality": "CT", "ScheduledStationAETitle": "CT02"}
    assert items["A1"].status is Status.IN_PROGRESS and not items["A1"].hidden
    assert (items["A2"].status, items["A2"].fields) == (Status.CANCELLED, {"Modality": "MR"})
    assert items["A3"].status is Status.DISCONTINUED and items["A3"].hidden


@settings(max_examples=50, deadline=None)
@given(st.randoms(use_true_random=False))
def test_any_arrival_order_resolves_to_the_same_items(rng: random.Random) -> None:
    shuffled = list(HISTORY)
    rng.shuffle(shuffled)
    assert resolve(shuffled) == resolve(HISTORY)


def test_the_wire_form_round_trips_and_refuses_garbage() -> None:
    for e in HISTORY:
        assert OrderEvent.from_json(json.loads(e.dumps())) == e
    for bad in ({}, {"event_id": "x"}, {**HISTORY[0].to_json(), "control": "ZZ"}):
        with pytest.raises(BadOrderEvent):
            OrderEvent.from_json(bad)


async def test_the_store_keeps_events_refuses_what_cannot_apply_and_reopens(
        index: Index) -> None:
    store = WorklistStore(index.db)
    await store.open()
    assert (await store.accept(HISTORY[0])).new
    assert not (await store.accept(HISTORY[0])).new  # a repeat: applied once
    with pytest.raises(OrderRefused) as dup:
        await store.accept(event(9, Control.NEW, "2026-12-03T09:00"))
    assert dup.value.duplicate
    with pytest.raises(OrderRefused) as unknown:
        await store.accept(event(10, Control.CHANGE, "2026-12-03T09:00", "NOPE"))
    assert not unknown.value.duplicate
    for e in HISTORY[1:6]:
        if e.event_id != HISTORY[5].event_id:
            await store.accept(e)
    with pytest.raises(OrderRefused):  # A2 has ended
        await store.accept(HISTORY[5])
    assert [i.accession for i in store.visible()] == ["A1"]
    rows = await index.db.fetchall(
        "SELECT accession, status, patient_id FROM worklist_items ORDER BY accession")
    assert [(r["accession"], r["status"], r["patient_id"]) for r in rows] == [
        ("A1", "IN PROGRESS", "P1"), ("A2", "CANCELLED", "P1")]
    with pytest.raises(Exception, match="immutable"):
        async with index.db.transaction() as conn:
            await conn.execute("UPDATE order_events SET at = ''")
    assert await store.receive(HISTORY, "peer") == 3  # from another member: as they are
    again = WorklistStore(index.db)
    await again.open()
    assert again.items == store.items == resolve(HISTORY)


async def test_orders_over_real_mllp_are_acknowledged_and_stored(index: Index) -> None:
    """python-hl7's MLLP client as the RIS, sending to the listener over TCP."""
    patients = PatientStore(index.db, index_knows(index))
    await patients.open()
    worklist = WorklistStore(index.db)
    await worklist.open()
    listener = Hl7Listener(ListenerSettings("127.0.0.1", 0),
                           applier(patients, "node-a", worklist))
    await listener.start()
    try:
        def exchange() -> list[tuple[str, str]]:
            ris = His(listener.port)
            try:
                answers = []
                for text in (orm("NW", "M1"), orm("NW", "M1"), orm("NW", "M2"),
                             orm("XO", "M3", "NOPE"), orm("NW", "M4", accession=""),
                             orm("SC", "M5", status="IP"), omi("NW", "O1"),
                             orm("CA", "M6", "ACC9")):
                    ack = ris.send(text)
                    code = ack_code(ack)
                    answers.append((code, "" if code == "AA" else err_location(ack)))
                return answers
            finally:
                ris.close()

        answers = await asyncio.to_thread(exchange)
    finally:
        await listener.stop()
    assert answers == [("AA", ""), ("AA", ""), ("AE", "OBR^1^18"), ("AE", "OBR^1^18"),
                       ("AE", "OBR^1^18"), ("AA", ""), ("AA", ""), ("AA", "")]
    assert {a: i.status for a, i in worklist.items.items()} == {
        "ACC1": Status.IN_PROGRESS, "ACC9": Status.CANCELLED}
    assert [e.origin for e in worklist.events()] == ["node-a"] * 4
    # The cancel came in the second of its order: stored after it all the same.
    assert [(e.accession, e.control) for e in worklist.events()][-2:] == [
        ("ACC9", Control.NEW), ("ACC9", Control.CANCEL)]
    assert to_order_event(parsed(orm("NW", "M1")), "node-a") == worklist.events()[0]
