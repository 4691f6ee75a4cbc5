"""Patient events across the mesh: ADT sent to one member process over real MLLP,
C-FIND (DCMTK findscu) at another shows the current identity, and a member that was
down while the correction was made shows it once it is back."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from tests.hl7_support import His, ack_code, adt, find_studies, trauma_study
from tests.mesh_support import invite, joiner, mesh_view, start_founder, wait_for
from tests.support import free_port, storescu


def _names(node, out: Path, **keys: str) -> list[tuple[str, str]]:
    return sorted((str(d.PatientID), str(d.PatientName))
                  for d in find_studies(node, out, **keys))


def _send(port: int, message: str) -> None:
    his = His(port)
    try:
        assert ack_code(his.send(message)) == "AA"
    finally:
        his.close()


def test_corrections_and_merges_reach_every_member_even_one_that_was_down(
        make_node, tmp_path: Path) -> None:
    port = free_port()
    a = start_founder(make_node, extra_args=("--hl7-port", str(port)))
    b = joiner(make_node, a, "nodeb", invite(a)).start()
    wait_for(lambda: len(mesh_view(b)["members"]) == 2, 30)
    files = [trauma_study(tmp_path / "in", "TRAUMA-7"),
             trauma_study(tmp_path / "in", "P-88", "Doe^Jane")]
    assert storescu(a, files) == []
    out = tmp_path / "found"
    wait_for(lambda: _names(b, out, PatientID="TRAUMA-7") == [("TRAUMA-7", "UNKNOWN^TRAUMA")],
             60)

    _send(port, adt("A08", "C1", "TRAUMA-7^^^HOSP", "Smith^Anna"))
    wait_for(lambda: _names(b, out, PatientID="TRAUMA-7") == [("TRAUMA-7", "Smith^Anna")], 30)

    b.stop()
    _send(port, adt("A40", "C2", "P-88^^^HOSP", "Doe^Jane^Anna", mrg="TRAUMA-7^^^HOSP"))
    assert _names(a, out, PatientID="P-88") == [("P-88", "Doe^Jane^Anna")] * 2
    b.start()
    # Its first answer already: queries wait (bounded) for the events due from A.
    assert _names(b, out, PatientID="TRAUMA-7") == []
    assert _names(b, out, PatientID="P-88") == [("P-88", "Doe^Jane^Anna")] * 2
    assert "learnt from" in b.log()


def test_conflicting_updates_at_two_members_converge_to_the_later_event(
        make_node, tmp_path: Path) -> None:
    """The update made later (EVN-2) wins on both members, whichever arrived first."""
    port_a, port_b = free_port(), free_port()
    a = start_founder(make_node, extra_args=("--hl7-port", str(port_a)))
    b = joiner(make_node, a, "nodeb", invite(a))
    b.extra_args = (*b.extra_args, "--hl7-port", str(port_b))
    b.start()
    wait_for(lambda: len(mesh_view(b)["members"]) == 2, 30)
    assert storescu(a, [trauma_study(tmp_path / "in", "CONFLICT-1")]) == []
    out_a, out_b = tmp_path / "fa", tmp_path / "fb"
    wait_for(lambda: len(_names(b, out_b, PatientID="CONFLICT-1")) == 1, 60)

    _send(port_a, adt("A08", "A-1", "CONFLICT-1", "Later^Name", when="20261203120000"))
    _send(port_b, adt("A08", "B-1", "CONFLICT-1", "Earlier^Name", when="20261203110000"))
    wait_for(lambda: _events(a) == _events(b) == ["HIS|HOSP|A-1", "HIS|HOSP|B-1"], 30)
    want = [("CONFLICT-1", "Later^Name")]
    assert _names(a, out_a, PatientID="CONFLICT-1") == want
    assert _names(b, out_b, PatientID="CONFLICT-1") == want


def _events(node) -> list[str]:
    with contextlib.closing(sqlite3.connect(node.data_dir / "index.sqlite")) as db:
        return [r[0] for r in db.execute("SELECT event_id FROM patient_events ORDER BY 1")]
