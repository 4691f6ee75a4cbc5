"""Storage commitment with pynetdicom as the requester: refused requests change
nothing, and a report sorts what the node does not hold into the failed list."""

from __future__ import annotations

import os
import queue
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from node.commitment import Item, sort_items
from node.datadir import INDEX_FILE
from node.dicom.stgcmt_scp import BadRequest, parse_action
from tests.mesh_support import wait_for
from tests.support import NodeProcess, free_port, storescu

PUSH = "1.2.840.10008.1.20.1"
INSTANCE = "1.2.840.10008.1.20.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
REQUESTER = "REQUESTER"


def _ref(sop_class: str | None, sop_uid: str | None) -> Dataset:
    ref = Dataset()
    if sop_class is not None:
        ref.ReferencedSOPClassUID = sop_class
    if sop_uid is not None:
        ref.ReferencedSOPInstanceUID = sop_uid
    return ref


def _request(*refs: Dataset, transaction: str | None = None) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction or generate_uid()
    ds.ReferencedSOPSequence = list(refs)
    return ds


def _report_scp(port: int, got: queue.Queue[Dataset]) -> ThreadedAssociationServer:

    def on_report(event: Event) -> tuple[int, None]:
        got.put(event.event_information)
        return 0x0000, None

    ae = AE(ae_title=REQUESTER)
    ae.add_supported_context(PUSH)
    return ae.start_server(("127.0.0.1", port), block=False,
                           evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])


@pytest.fixture
def reports() -> Iterator[tuple[int, queue.Queue[Dataset]]]:
    """A pynetdicom requester's own SCP, where the node sends its N-EVENT-REPORTs."""
    got: queue.Queue[Dataset] = queue.Queue()
    port = free_port()
    server = _report_scp(port, got)
    yield port, got
    server.shutdown()


@pytest.fixture
def lone(make_node, reports) -> NodeProcess:
    port, _ = reports
    return make_node("lone", aet="LONE", modalities=(f"{REQUESTER}@127.0.0.1:{port}",),
                     env={**os.environ, "PACSMESH_STORAGE_COMMITMENT_DEADLINE": "3"}).start()


def _associate(node: NodeProcess, aet: str = REQUESTER) -> Association:
    ae = AE(ae_title=aet)
    ae.add_requested_context(PUSH)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet)
    assert assoc.is_established
    return assoc


def _rows(node: NodeProcess) -> list[tuple]:
    with sqlite3.connect(f"file:{node.data_dir / INDEX_FILE}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT * FROM commitments").fetchall()


def test_bad_requests_get_their_status_and_change_nothing(lone: NodeProcess) -> None:
    good = _ref(CT, generate_uid())
    assoc = _associate(lone)
    try:
        cases = [
            (2, _request(good), 0x0123),  # no such action type
            (1, _request(_ref(CT, None)), 0x0120),  # an item without its instance UID
            (1, _request(_ref(None, generate_uid())), 0x0120),
            (1, _request(_ref(CT, "1.2.x.3")), 0x0106),  # not a UID
            (1, _request(), 0x0121),  # an empty Referenced SOP Sequence
            (1, _request(good, transaction="not-a-uid"), 0x0106),
        ]
        for action, ds, expected in cases:
            status, reply = assoc.send_n_action(ds, action, PUSH, INSTANCE)
            assert status.Status == expected, (action, ds)
            assert reply is None
        no_sequence = Dataset()
        no_sequence.TransactionUID = generate_uid()
        assert assoc.send_n_action(no_sequence, 1, PUSH, INSTANCE)[0].Status == 0x0120
        # The right class, the wrong instance.
        assert assoc.send_n_action(_request(good), 1, PUSH, generate_uid())[0].Status == 0x0117
    finally:
        assoc.release()
    # A requester with no known address could never be told: refused at once.
    stranger = _associate(lone, "STRANGER")
    try:
        assert stranger.send_n_action(_request(good), 1, PUSH, INSTANCE)[0].Status == 0x0110
    finally:
        stranger.release()
    assert _rows(lone) == []


def test_report_sorts_held_and_unknown_instances(lone: NodeProcess, reports) -> None:
    _, got = reports
    path = Path(get_testdata_file("CT_small.dcm"))
    assert storescu(lone, [path]) == []
    held = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    unknown = generate_uid()
    transaction = generate_uid()
    assoc = _associate(lone)
    try:
        request = _request(_ref(CT, held), _ref(CT, unknown), transaction=transaction)
        status, reply = assoc.send_n_action(request, 1, PUSH, INSTANCE)
        assert status.Status == 0x0000 and not reply  # status only, no Action Reply
        # The same transaction again: the first one stands, one report.
        assert assoc.send_n_action(request, 1, PUSH, INSTANCE)[0].Status == 0x0000
    finally:
        assoc.release()
    report = got.get(timeout=60)  # after the 3 s deadline: the unknown one never came
    assert report.TransactionUID == transaction
    assert [r.ReferencedSOPInstanceUID for r in report.ReferencedSOPSequence] == [held]
    assert [(r.ReferencedSOPInstanceUID, r.FailureReason)
            for r in report.FailedSOPSequence] == [(unknown, 0x0112)]
    wait_for(lambda: [r[5] for r in _rows(lone)] == ["reported"], 30)
    assert got.empty()


def test_report_to_an_unreachable_requester_is_tried_again(make_node) -> None:
    port = free_port()  # nothing listens there yet
    node = make_node("lone", aet="LONE", modalities=(f"{REQUESTER}@127.0.0.1:{port}",),
                     env={**os.environ, "PACSMESH_STORAGE_COMMITMENT_DEADLINE": "1"}).start()
    transaction = generate_uid()
    assoc = _associate(node)
    try:
        request = _request(_ref(CT, generate_uid()), transaction=transaction)
        assert assoc.send_n_action(request, 1, PUSH, INSTANCE)[0].Status == 0x0000
    finally:
        assoc.release()
    wait_for(lambda: [(r[5], r[7] >= 1) for r in _rows(node)] == [("reporting", True)], 30)
    got: queue.Queue[Dataset] = queue.Queue()
    server = _report_scp(port, got)
    try:
        report = got.get(timeout=60)
        assert report.TransactionUID == transaction
        assert [r.FailureReason for r in report.FailedSOPSequence] == [0x0112]
        wait_for(lambda: [r[5] for r in _rows(node)] == ["reported"], 30)
    finally:
        server.shutdown()


def test_parse_and_sort_rules() -> None:
    with pytest.raises(BadRequest) as bad:
        parse_action(1, INSTANCE, None)
    assert bad.value.status == 0x0120
    sop = generate_uid()
    parsed = parse_action(1, INSTANCE, _request(_ref(CT, sop), _ref(CT, sop)))
    assert parsed.items == (Item(CT, sop),)  # listed twice, reported once
    item = Item(CT, sop)
    assert sort_items([item], {}, {sop: frozenset({"b"})}, 2, expired=False) is None
    verdict = sort_items([item], {}, {sop: frozenset({"b", "c"})}, 2, expired=False)
    assert verdict is not None and verdict.committed == (item,)
    late = sort_items([item], {}, {}, 2, expired=True)
    assert late is not None and late.failed == ((item, 0x0112),)
