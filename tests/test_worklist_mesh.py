"""The worklist across the mesh: an order sent to one member over real MLLP (python-hl7),
that member SIGKILLed, and DCMTK ``findscu -W`` at another member still sees the item;
the MPPS the modality sends there ends it."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import generate_uid

from tests.hl7_support import His, ack_code
from tests.mesh_support import invite, joiner, mesh_view, start_founder, wait_for
from tests.support import free_port
from tests.test_mpps import MPPS, _step
from tests.test_worklist_node import completed, modality, worklist
from tests.test_worklist_orders import orm

STEP_KEYS = ("ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
             "ScheduledProcedureStepSequence[0].Modality")


def accessions(node, out: Path) -> list[str]:
    found, _ = worklist(node, out, *STEP_KEYS)
    return [str(d.AccessionNumber) for d in found]


def test_the_worklist_outlives_the_member_that_took_the_order(
        make_node, tmp_path: Path) -> None:
    port = free_port()
    a = start_founder(make_node, extra_args=("--hl7-port", str(port)))
    b = joiner(make_node, a, "nodeb", invite(a)).start()
    wait_for(lambda: len(mesh_view(b)["members"]) == 2, 30)
    ris = His(port)
    try:
        for text in (orm("NW", "M1"), orm("NW", "M2", "ACC2"), orm("CA", "M3", "ACC2")):
            assert ack_code(ris.send(text)) == "AA"
    finally:
        ris.close()
    out = tmp_path / "found"
    wait_for(lambda: accessions(b, out) == ["ACC1"] and "order event(s) learnt" in b.log(),
             60)
    a.kill()  # SIGKILL: the node that took the order (and the RIS behind it) gone
    assert accessions(b, out) == ["ACC1"]

    with modality(b) as assoc:  # the modality goes on with B: its step ends the item
        uid = generate_uid()
        assert assoc.send_n_create(_step(accession="ACC1"), MPPS, uid)[0].Status == 0x0000
        assert assoc.send_n_set(completed(), MPPS, uid)[0].Status == 0x0000
    assert accessions(b, out) == []
