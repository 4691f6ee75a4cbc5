"""Current patient identity from patient events: pure resolution (any arrival order,
one answer) and the store over a real SQLite index."""

from __future__ import annotations

import asyncio
import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from node.dicom_header import InstanceKeys
from node.index import Index
from node.patients.current import Identities, resolve
from node.patients.events import BadPatientEvent, Kind, PatientEvent, PatientKey
from node.patients.present import Presentation, coerce
from node.patients.store import EventRefused, PatientStore, index_knows
from node.query import parse_identifier
from replication.errors import RemoteAnswerInvalid
from replication.wire import PatientEventList


def stored(sop: str, patient_id: str, name: str = "Unknown^Trauma") -> InstanceKeys:
    return InstanceKeys(sop, "1.2.840.10008.5.1.4.1.1.2", f"{sop}.0", f"{sop}.0.0",
                        "1.2.840.10008.1.2.1", patient_id=patient_id, patient_name=name,
                        study_date="20261203")


A, B, C = PatientKey("A", "HOSP"), PatientKey("B", "HOSP"), PatientKey("C", "HOSP")


def update(n: int, key: PatientKey, at: str, **attributes: str) -> PatientEvent:
    return PatientEvent(f"HIS|HOSP|{n}", at, Kind.UPDATE, key, None, attributes)


def merge(n: int, prior: PatientKey, survivor: PatientKey, at: str,
          kind: Kind = Kind.MERGE, **attributes: str) -> PatientEvent:
    return PatientEvent(f"HIS|HOSP|{n}", at, kind, survivor, prior, attributes)


def summary(ids: Identities) -> dict[PatientKey, tuple[PatientKey, dict[str, str], bool]]:
    return {k: (c.key, c.attributes, c.merged) for k in sorted(ids.keys())
            for c in [ids.current(k)]}


def test_updates_apply_per_attribute_by_event_time_not_arrival() -> None:
    late = update(1, A, "2026-12-03T10:00", PatientName="Doe^Jane")
    early = update(2, A, "2026-12-03T09:00", PatientName="Unknown^Trauma", PatientSex="F")
    now = resolve([late, early]).current(A)
    assert now.attributes == {"PatientName": "Doe^Jane", "PatientSex": "F"}
    tie = update(0, A, "2026-12-03T10:00", PatientName="Tie^Lost")  # id "…|0" < "…|1"
    assert resolve([late, tie]).current(A).attributes["PatientName"] == "Doe^Jane"


def test_merge_chains_resolve_and_a_remerge_or_cycle_is_ignored() -> None:
    events = [merge(1, A, B, "2026-12-03T09:00"), merge(2, B, C, "2026-12-03T10:00"),
              merge(3, A, C, "2026-12-03T11:00"), merge(4, C, A, "2026-12-03T12:00")]
    ids = resolve(events)
    assert ids.current(A).key == C and ids.current(B).key == C
    assert ids.current(C).key == C and not ids.current(C).merged
    assert ids.current(A).merged


def test_a_merge_keeps_the_survivor_demographics_a_rename_carries_them() -> None:
    events = [update(1, A, "2026-12-03T09:00", PatientName="Old^Name", PatientSex="M"),
              merge(2, A, B, "2026-12-03T10:00", PatientName="Survivor^Name")]
    assert resolve(events).current(A).attributes == {"PatientName": "Survivor^Name"}
    renamed = [events[0], merge(2, A, B, "2026-12-03T10:00", Kind.CHANGE_ID)]
    assert resolve(renamed).current(A).attributes == {"PatientName": "Old^Name",
                                                      "PatientSex": "M"}


KEYS = [PatientKey(i, "HOSP") for i in "ABCDE"]
_event = st.builds(
    lambda n, kind, a, b, at, name: (
        update(n, KEYS[a], f"2026-12-03T{at:02d}", PatientName=name) if kind == 0 else
        merge(n, KEYS[a], KEYS[b], f"2026-12-03T{at:02d}",
              Kind.MERGE if kind == 1 else Kind.CHANGE_ID, PatientSex=name[:1])),
    st.integers(0, 10_000), st.integers(0, 2), st.integers(0, 4), st.integers(0, 4),
    st.integers(0, 23), st.sampled_from(["Doe^J", "Roe^R", "Poe^P", ""]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_event, max_size=12, unique_by=lambda e: e.event_id), st.randoms())
def test_any_arrival_order_gives_the_same_identity(events: list[PatientEvent],
                                                   rnd: random.Random) -> None:
    events = [e for e in events if e.prior != e.patient]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert summary(resolve(events)) == summary(resolve(shuffled))
    ids = resolve(events)
    for key in ids.keys():  # every chain ends at a key never merged
        assert ids.root(ids.root(key)) == ids.root(key)


async def test_the_store_keeps_events_refuses_bad_merges_and_presents(index: Index) -> None:
    await index.add_instance(stored("1.2.3.1", "A"), "a" * 64, 10)
    store = PatientStore(index.db, index_knows(index))
    await store.open()
    index.patients = store
    first = update(1, A, "2026-12-03T09:00", PatientName="Doe^Jane")
    assert (await store.accept(first)).new
    assert not (await store.accept(first)).new  # a repeat: applied once
    with pytest.raises(EventRefused, match="no patient"):
        await store.accept(merge(2, PatientKey("NOBODY"), A, "2026-12-03T10:00"))
    await store.accept(merge(3, A, B, "2026-12-03T10:00", PatientName="Doe^Jane^M"))
    with pytest.raises(EventRefused, match="already merged"):
        await store.accept(merge(4, A, C, "2026-12-03T11:00"))
    rows = await index.db.fetchall("SELECT event_id FROM patient_events ORDER BY event_id")
    assert [r["event_id"] for r in rows] == ["HIS|HOSP|1", "HIS|HOSP|3"]

    def study_query(**match: str) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", ""
        ds.PatientID, ds.PatientName = match.get("PatientID", ""), match.get("PatientName", "")
        return ds

    found = await index.find(parse_identifier(study_query(PatientID="B")))
    assert [(r["PatientID"], r["PatientName"]) for r in found] == [("B", "Doe^Jane^M")]
    assert await index.find(parse_identifier(study_query(PatientID="A"))) == []
    assert len(await index.find(parse_identifier(study_query(PatientName="doe^jane*")))) == 1
    assert len(await index.instances_for(parse_identifier(study_query(PatientID="B")))) == 1
    reopened = PatientStore(index.db, index_knows(index))
    await reopened.open()
    assert summary(reopened.identities) == summary(store.identities)


def test_coercion_keeps_the_replaced_values_and_encodes_any_name() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientID, ds.PatientName, ds.StudyDescription = "A", "Müller^Jörg", "Schädel"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    raw = io.BytesIO()
    ds.save_as(raw, implicit_vr=False, little_endian=True)
    read = dcmread(io.BytesIO(raw.getvalue()), force=True)
    assert coerce(read, Presentation("B", "HOSP&1.2&ISO", {"PatientName": "山田^太郎"}))
    assert not coerce(read, Presentation("B", "HOSP&1.2&ISO", {"PatientName": "山田^太郎"}))
    out = io.BytesIO()
    read.save_as(out, implicit_vr=False, little_endian=True)
    again = dcmread(io.BytesIO(out.getvalue()), force=True)
    assert (again.PatientID, again.PatientName, again.IssuerOfPatientID) == ("B", "山田^太郎",
                                                                             "HOSP")
    assert again.StudyDescription == "Schädel"
    old = again.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert (old.PatientID, old.PatientName) == ("A", "Müller^Jörg")


def test_the_wire_list_of_events_round_trips_and_refuses_what_is_not_one() -> None:
    events = (update(1, A, "2026-12-03T09:00", PatientName="Doe^Jane").to_json(),)
    listed = PatientEventList("d1", events=events)
    assert PatientEventList.from_json(listed.to_json()) == listed
    same = PatientEventList("d1", same=True)
    assert PatientEventList.from_json(same.to_json()) == same
    for bad in ([], {"digest": 3}, {"digest": "d", "events": "x"}):
        with pytest.raises(RemoteAnswerInvalid):
            PatientEventList.from_json(bad)
    with pytest.raises(BadPatientEvent):
        PatientEvent.from_json({"event_id": "x", "kind": "explode"})


async def test_events_accepted_at_once_are_all_kept(index: Index) -> None:
    store = PatientStore(index.db, index_knows(index))
    await store.open()
    many = [update(n, PatientKey(f"P{n}"), "2026-12-03T09:00", PatientSex="F")
            for n in range(20)]
    await asyncio.gather(*(store.accept(e) for e in many[:10]),
                         store.receive(many[10:], "node-b"))
    assert {e.event_id for e in store.events()} == {e.event_id for e in many}
    rows = await index.db.fetchall("SELECT COUNT(*) AS n FROM patient_current")
    assert rows[0]["n"] == 20
