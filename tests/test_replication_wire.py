"""The mesh wire of replication: every message parses its good form, and every malformed
form raises RemoteAnswerInvalid and nothing else. Pure: no sockets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydicom.dataset import Dataset

from replication.errors import RemoteAnswerInvalid, RemoteReplicationError, ReplicationError
from replication.wire import (
    CatalogChange,
    ChangePage,
    Digest,
    FindAnswer,
    FindRequest,
    Holdings,
    PartialHeld,
    TombstoneList,
    TransferReceipt,
    bucket_param,
)

SHA = "ab" * 32
ADD: dict[str, Any] = {
    "seq": 7, "kind": "add", "sop_uid": "1.2.3.4", "study_uid": "1.2.3", "at": 1700000000.5,
    "sha256": SHA, "size": 1024, "source_aet": "CT1", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
    "transfer_syntax_uid": "1.2.840.10008.1.2.1", "series_uid": "1.2.3.9",
    "instance_number": "1", "rows": 512, "columns": 512, "number_of_frames": "",
    "patient_id": "P1", "patient_name": "Doe^Jane", "patient_birth_date": "19700101",
    "patient_sex": "F", "study_date": "20240101", "study_time": "101010",
    "accession_number": "A1", "study_id": "S1", "study_description": "CT head",
    "referring_physician_name": "", "modality": "CT", "series_number": "2",
    "series_description": "axial", "series_date": "20240101", "series_time": "101011",
    "body_part_examined": "HEAD",
}
# A remove joins no instance row: its instance keys are null.
REMOVE: dict[str, Any] = {**{k: None for k in ADD}, "seq": 8, "kind": "remove",
                          "sop_uid": "1.2.3.4", "study_uid": "1.2.3", "at": 1700000001.0}
PAGE = {"changes": [ADD, REMOVE], "next": 8, "more": False}
TOMBSTONE = {"kind": "tombstone", "mesh": "m", "study": "1.2.3", "by": "A", "at": 1.0,
             "reason": "", "sig": "c2ln"}


def _identifier() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = "1.2.3"
    ds.SOPInstanceUID = ""
    return ds


def _without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != key}


def test_the_error_is_a_remote_replication_error_and_a_value_error() -> None:
    assert issubclass(RemoteAnswerInvalid, RemoteReplicationError)
    assert issubclass(RemoteAnswerInvalid, ReplicationError)
    assert issubclass(RemoteAnswerInvalid, ValueError)  # old `except ValueError` still holds


def test_change_page_parses_adds_and_removes() -> None:
    page = ChangePage.from_json(PAGE)
    assert (page.next, page.more) == (8, False)
    add, remove = page.changes
    assert (add.kind, add.sha256, add.size, add.rows, add.patient_name) == \
        ("add", SHA, 1024, 512, "Doe^Jane")
    assert (remove.kind, remove.sha256, remove.series_uid) == ("remove", None, None)
    # What the catalog store receives is what the peer sent.
    assert page.rows() == [ADD, REMOVE]


def test_a_change_may_lack_the_keys_the_catalog_does_without() -> None:
    bare = {k: ADD[k] for k in ("seq", "kind", "sop_uid", "study_uid", "at", "sha256")}
    change = CatalogChange.from_json(bare)
    assert (change.size, change.modality, change.rows) == (None, None, None)
    assert change.to_json()["modality"] is None
    assert CatalogChange.from_json({**bare, "at": 3}).at == 3.0  # an integral time


def test_a_change_page_may_be_empty() -> None:
    page = ChangePage.from_json({"changes": [], "next": 0, "more": False})
    assert page.changes == () and page.rows() == []


@pytest.mark.parametrize("bad", [
    None, [], "page", 5,
    _without(PAGE, "changes"), _without(PAGE, "next"), _without(PAGE, "more"),
    {**PAGE, "changes": {"0": ADD}}, {**PAGE, "changes": "x"}, {**PAGE, "changes": [None]},
    {**PAGE, "changes": [[]]},
    {**PAGE, "next": "8"}, {**PAGE, "next": 8.0}, {**PAGE, "next": True}, {**PAGE, "next": None},
    {**PAGE, "more": 0}, {**PAGE, "more": "no"},
    *({**PAGE, "changes": [_without(ADD, key)]}
      for key in ("seq", "kind", "sop_uid", "study_uid", "at", "sha256")),
    {**PAGE, "changes": [{**ADD, "seq": "7"}]}, {**PAGE, "changes": [{**ADD, "kind": 1}]},
    {**PAGE, "changes": [{**ADD, "sop_uid": None}]},
    {**PAGE, "changes": [{**ADD, "study_uid": ["1.2"]}]},
    {**PAGE, "changes": [{**ADD, "at": "now"}]}, {**PAGE, "changes": [{**ADD, "at": False}]},
    {**PAGE, "changes": [{**ADD, "sha256": 5}]}, {**PAGE, "changes": [{**ADD, "size": "1"}]},
    {**PAGE, "changes": [{**ADD, "size": 1.5}]}, {**PAGE, "changes": [{**ADD, "rows": True}]},
    {**PAGE, "changes": [{**ADD, "modality": 3}]},
    {**PAGE, "changes": [{**ADD, "patient_name": {"Alphabetic": "x"}}]},
])
def test_malformed_change_pages_are_refused(bad: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        ChangePage.from_json(bad)


def test_digest_round_trips_with_integer_buckets() -> None:
    digest = Digest.from_json({"0": "aa", "255": "bb"})
    assert digest.buckets == {0: "aa", 255: "bb"}
    assert digest.to_json() == {"0": "aa", "255": "bb"}
    assert Digest.from_json({}).buckets == {}


@pytest.mark.parametrize("bad", [None, [], ["0", "aa"], "aa", 3, {"zero": "aa"}, {"": "aa"},
                                 {"1.5": "aa"}, {"0": 5}, {"0": None}, {"0": ["aa"]}])
def test_malformed_digests_are_refused(bad: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        Digest.from_json(bad)


def test_holdings_round_trip() -> None:
    held = Holdings.from_json({"1.2.3.4": SHA})
    assert held.held == {"1.2.3.4": SHA} and held.to_json() == {"1.2.3.4": SHA}
    assert Holdings.from_json({}).held == {}


@pytest.mark.parametrize("bad", [None, [], [["1.2", SHA]], SHA, 1, {"1.2": None},
                                 {"1.2": 5}, {"1.2": [SHA]}])
def test_malformed_holdings_are_refused(bad: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        Holdings.from_json(bad)


def test_bucket_param() -> None:
    assert bucket_param({"bucket": "17"}) == 17
    for bad in ({}, {"bucket": ""}, {"bucket": "x"}, {"bucket": "1.5"}):
        with pytest.raises(RemoteAnswerInvalid):
            bucket_param(bad)


def test_partial_held_round_trips() -> None:
    assert PartialHeld.from_json({"stored": True, "offset": 0}) == PartialHeld(True, 0)
    held = PartialHeld.from_json({"stored": False, "offset": 4096})
    assert held == PartialHeld(False, 4096)
    assert held.to_json() == {"stored": False, "offset": 4096}


@pytest.mark.parametrize("bad", [None, [], "stored", True, {"stored": True},
                                 {"offset": 0}, {"stored": 1, "offset": 0},
                                 {"stored": "yes", "offset": 0}, {"stored": False, "offset": "9"},
                                 {"stored": False, "offset": 9.5},
                                 {"stored": False, "offset": None},
                                 {"stored": False, "offset": False}])
def test_malformed_partial_answers_are_refused(bad: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        PartialHeld.from_json(bad)


def test_transfer_receipt_round_trips() -> None:
    assert TransferReceipt.from_json({"status": "stored"}).status == "stored"
    assert TransferReceipt("duplicate").to_json() == {"status": "duplicate"}


@pytest.mark.parametrize("bad", [None, [], "stored", {}, {"status": None}, {"status": 200},
                                 {"status": ["stored"]}])
def test_malformed_receipts_are_refused(bad: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        TransferReceipt.from_json(bad)


def test_find_request_round_trips() -> None:
    ask = FindRequest(_identifier(), "PATIENT")
    back = FindRequest.from_json(ask.to_json())
    assert back.root == "PATIENT"
    assert back.identifier.StudyInstanceUID == "1.2.3"
    assert back.identifier.QueryRetrieveLevel == "IMAGE"
    # The root defaults to Study Root, as it always has.
    assert FindRequest.from_json({"identifier": _identifier().to_json_dict()}).root == "STUDY"


@pytest.mark.parametrize("bad", [
    None, [], "find", {}, {"identifier": None}, {"identifier": []}, {"identifier": "x"},
    {"identifier": {}, "root": 5}, {"identifier": {}, "root": None},
    {"identifier": {"0020000D": 5}},  # not an element
    {"identifier": {"0020000D": {"Value": ["1.2"]}}},  # no VR
    {"identifier": {"0020000D": {"vr": "UI", "Value": "1.2"}}},  # Value not a list
    {"identifier": {"not a tag": {"vr": "UI", "Value": ["1.2"]}}},
    {"identifier": {"00200013": {"vr": "IS", "Value": ["one"]}}},
    {"identifier": {"00081115": {"vr": "SQ", "Value": [5]}}},  # an item not an object
])
def test_malformed_find_requests_are_refused(bad: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        FindRequest.from_json(bad)


def test_find_answer_round_trips() -> None:
    rows = [{"SOPInstanceUID": "1.2.3.4", "InstanceNumber": "1"}]
    answer = FindAnswer.from_json({"rows": rows})
    assert list(answer.rows) == rows and answer.to_json() == {"rows": rows}
    assert FindAnswer.from_json({"rows": []}).rows == ()


@pytest.mark.parametrize("bad", [None, [], "rows", {}, {"rows": None}, {"rows": "x"},
                                 {"rows": {"a": {}}}, {"rows": [None]}, {"rows": [["x"]]},
                                 {"rows": [{}, 5]}])
def test_malformed_find_answers_are_refused(bad: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        FindAnswer.from_json(bad)


def test_tombstone_lists_same_or_full() -> None:
    same = TombstoneList.from_json({"digest": "d", "same": True})
    assert (same.same, same.tombstones) == (True, ())
    assert same.to_json() == {"digest": "d", "same": True}
    full = TombstoneList.from_json({"digest": "d", "tombstones": [TOMBSTONE]})
    assert (full.same, full.tombstones) == (False, (TOMBSTONE,))
    assert full.to_json() == {"digest": "d", "tombstones": [TOMBSTONE]}
    # Documents are checked one by one later (check_tombstone): a bad one is kept here.
    odd = TombstoneList.from_json({"digest": "d", "same": False, "tombstones": ["x", None]})
    assert odd.tombstones == ("x", None)


@pytest.mark.parametrize("bad", [None, [], "d", {}, {"same": True}, {"digest": 5, "same": True},
                                 {"digest": "d"}, {"digest": "d", "same": "yes"},
                                 {"digest": "d", "same": 1}, {"digest": "d", "tombstones": None},
                                 {"digest": "d", "tombstones": {"a": TOMBSTONE}},
                                 {"digest": "d", "tombstones": "x"}])
def test_malformed_tombstone_lists_are_refused(bad: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        TombstoneList.from_json(bad)


@pytest.mark.parametrize("parse", [ChangePage.from_json, CatalogChange.from_json,
                                   Digest.from_json, Holdings.from_json, PartialHeld.from_json,
                                   TransferReceipt.from_json, FindRequest.from_json,
                                   FindAnswer.from_json, TombstoneList.from_json])
@pytest.mark.parametrize("junk", [None, 0, 1.5, True, "", "{}", [], [{}], b"{}", object()])
def test_every_message_refuses_junk_with_one_error(parse: Callable[[Any], Any],
                                                   junk: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        parse(junk)


def test_messages_are_frozen() -> None:
    receipt = TransferReceipt("stored")
    with pytest.raises(AttributeError):
        receipt.status = "duplicate"  # type: ignore[misc]
