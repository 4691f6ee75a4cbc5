"""Node reads the mesh catalog and the outbox only through seams replication fills in."""

from __future__ import annotations

from node.index import Index
from node.query import Query
from replication.catalog_store import CatalogStore
from replication.outbox_store import OutboxStore, TargetDebt

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


def _held_by_peer() -> dict[str, object]:
    return {"kind": "add", "study_uid": STUDY, "sop_uid": SOP, "sha256": "a" * 64,
            "series_uid": SERIES, "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
            "transfer_syntax_uid": "1.2.840.10008.1.2.1", "instance_number": "1",
            "size": 10, "patient_id": "P1", "modality": "CT"}


async def test_c_find_over_the_mesh_reads_the_catalog_only_through_the_mesh_view(
    index: Index,
) -> None:
    await CatalogStore(index.db).record_catalog_changes("PEER", [_held_by_peer()], 1)
    query = Query(level="STUDY")
    # No view (a lone node): a mesh query reads this node's holdings, here none.
    assert await index.find(query, mesh=True) == []
    assert await index.instances_for(query, mesh=True) == []
    index.mesh_view = CatalogStore(index.db)
    assert [r["StudyInstanceUID"] for r in await index.find(query, mesh=True)] == [STUDY]
    assert await index.find(query) == []
    [held] = await index.instances_for(query, mesh=True)
    assert (held.sop_uid, held.study_uid, held.local) == (SOP, STUDY, False)


async def test_the_outbox_summary_counts_rows_and_studies(index: Index) -> None:
    outbox = OutboxStore(index.db)
    await outbox.add_to_outbox([(SOP, "B", STUDY, "a" * 64), (SOP, "C", STUDY, "a" * 64)])
    assert await outbox.outbox_summary() == (2, 1)
    assert await outbox.outbox_by_target() == {"B": TargetDebt(1, 0), "C": TargetDebt(1, 0)}
