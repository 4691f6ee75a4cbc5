"""A node's worklist end to end: python-hl7 as the RIS sends orders over real MLLP to a
node process."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from tests.hl7_support import His, ack_code, err_location
from tests.support import NodeProcess, free_port
from tests.test_worklist_orders import omi, orm


@pytest.fixture
def ris_node(make_node) -> tuple[NodeProcess, int]:
    port = free_port()
    node = make_node("worklist", extra_args=("--hl7-port", str(port))).start()
    return node, port


def items(node: NodeProcess) -> list[tuple[str, str, str]]:
    with contextlib.closing(sqlite3.connect(node.data_dir / "index.sqlite")) as db:
        return db.execute("SELECT accession, patient_id, status FROM worklist_items"
                          " ORDER BY accession").fetchall()


def test_orders_become_durable_worklist_items(ris_node: tuple[NodeProcess, int]) -> None:
    node, port = ris_node
    ris = His(port)
    try:
        assert ack_code(ris.send(orm("NW", "M1"))) == "AA"
        assert ack_code(ris.send(omi("NW", "O1"))) == "AA"
        missing = ris.send(orm("NW", "M2", accession=""))
        assert (ack_code(missing), err_location(missing)) == ("AE", "OBR^1^18")
        assert ack_code(ris.send(orm("DC", "M3", "ACC9"))) == "AA"
    finally:
        ris.close()
    # Acknowledged means durable: the rows are there once the ACK is.
    assert items(node) == [("ACC1", "P1", "SCHEDULED"), ("ACC9", "P2", "DISCONTINUED")]
    node.stop()
    node.start()
    again = His(port)
    try:  # after a restart the items are known: a repeat is a repeat, a change applies
        assert ack_code(again.send(orm("NW", "M1"))) == "AA"
        assert ack_code(again.send(orm("SC", "M4", status="CM"))) == "AA"
    finally:
        again.close()
    assert items(node) == [("ACC1", "P1", "COMPLETED"), ("ACC9", "P2", "DISCONTINUED")]
