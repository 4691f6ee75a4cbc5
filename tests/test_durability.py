"""What a node still owes its owners: the pure tally, and the index's one-snapshot read."""

from __future__ import annotations

from dataclasses import dataclass, field

from node.dicom_header import InstanceKeys
from node.index import Index
from replication import service
from replication.catalog_store import CatalogStore
from replication.durability import (
    CHECKPOINT,
    FOREIGN_PREFIX,
    PLACED_REUSE,
    Debt,
    Durability,
    tally,
)
from replication.outbox_store import OutboxStore
from replication.placement import owners

ME, B, C = "me", "bb", "cc"
MEMBERS = [ME, B, C]


def _study_owned(wanted: set[str]) -> str:
    """A study UID whose two owners among MEMBERS are exactly ``wanted``."""
    for n in range(1000):
        uid = f"1.2.3.{n}"
        if set(owners(uid, MEMBERS, 2)) == wanted:
            return uid
    raise AssertionError("no such study")


def test_checkpoint_is_the_one_the_replicator_moves() -> None:
    assert service.STATE == CHECKPOINT


def test_pending_changes_count_as_copies_owed_to_each_other_owner() -> None:
    mine, theirs = _study_owned({ME, B}), _study_owned({B, C})
    rows = [{"kind": "pending", "study_uid": mine, "target": "", "n": 30},
            {"kind": "pending", "study_uid": theirs, "target": "", "n": 5}]
    debt = tally(rows, MEMBERS, ME, 2, in_mesh=True)
    # Owner here: one copy each to B. Not an owner: a copy each to both owners.
    assert debt.copies == 30 + 2 * 5
    assert debt.studies == {mine, theirs} and not debt.replicated
    assert debt.by_target[B].instances == 35 and debt.by_target[B].studies == {mine, theirs}
    assert debt.by_target[C].instances == 5
    assert ME not in debt.by_target and debt.short == frozenset()


def test_queued_rows_count_whoever_they_go_to_stand_ins_included() -> None:
    rows = [{"kind": "queued", "study_uid": "s1", "target": B, "n": 3},
            {"kind": "queued", "study_uid": "s1", "target": C, "n": 3}]  # C: a stand-in
    debt = tally(rows, MEMBERS, ME, 2, in_mesh=True)
    assert debt.copies == 6 and debt.studies == {"s1"}
    assert debt.as_json({B: "NODEB"})["owed"] == [
        {"node_id": B, "aet": "NODEB", "studies": 1, "instances": 3},
        {"node_id": C, "aet": "", "studies": 1, "instances": 3},
    ]


def test_a_study_this_node_owns_alone_with_r_1_is_replicated() -> None:
    rows = [{"kind": "pending", "study_uid": s, "target": "", "n": 1}
            for s in (f"1.{n}" for n in range(50))]
    debt = tally(rows, MEMBERS, ME, 1, in_mesh=True)
    mine = {f"1.{n}" for n in range(50) if owners(f"1.{n}", MEMBERS, 1) == [ME]}
    assert mine and debt.studies == {f"1.{n}" for n in range(50)} - mine


def test_too_few_members_or_no_mesh_leaves_every_received_study_short() -> None:
    rows = [{"kind": "received", "study_uid": "s1", "target": "", "n": 4},
            {"kind": "pending", "study_uid": "s1", "target": "", "n": 1}]
    alone = tally(rows, [ME], ME, 2, in_mesh=True)
    assert alone.copies == 0 and alone.studies == alone.short == {"s1"}
    outside = tally(rows, [], ME, 2, in_mesh=False)
    assert outside.copies == 0 and outside.studies == outside.short == {"s1"}
    enough = tally(rows, [ME, B], ME, 2, in_mesh=True)
    assert enough.short == frozenset() and enough.copies == 1


def test_nothing_owed_is_replicated() -> None:
    debt = tally([], MEMBERS, ME, 2, in_mesh=True)
    assert debt.replicated and debt.copies == 0


def _keys(study: str, n: int) -> InstanceKeys:
    return InstanceKeys(
        sop_instance_uid=f"{study}.1.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid=study, series_instance_uid=f"{study}.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1")


@dataclass
class _Members:
    node_id: str = ME
    is_member: bool = True
    ids: list[str] = field(default_factory=lambda: list(MEMBERS))

    def members(self) -> list[str]:
        return self.ids


async def owed(index: Index, members: _Members, replicas: int,
               study_uid: str | None = None) -> Debt:
    return await Durability(index, members, lambda: replicas).owed(study_uid)


async def test_index_counts_stored_instances_until_rows_replace_them(index: Index) -> None:
    study = _study_owned({B, C})
    for n in range(3):
        await index.add_instance(_keys(study, n), f"{n:064x}", 10, source_aet="MODALITY")
    # A copy from a member is the sender's to place: not owed by this node.
    await index.add_instance(_keys("9.9", 0), "f" * 64, 10, source_aet=FOREIGN_PREFIX + "bb")
    members = _Members()
    before = await owed(index, members, 2)
    assert before.copies == 6 and before.studies == {study}

    # The enqueue moves the checkpoint and creates the rows in one transaction: the
    # count is the same on either side of it.
    changes = await index.changes_since(0)
    rows = [(f"{study}.1.{n}", t, study, f"{n:064x}") for n in range(3) for t in (B, C)]
    await OutboxStore(index.db).enqueue(rows, (*CHECKPOINT, changes[-1]["seq"]))
    after = await owed(index, members, 2)
    assert after.copies == 6 and after.studies == {study}
    assert {t: o.instances for t, o in after.by_target.items()} == {B: 3, C: 3}
    assert (await owed(index, members, 2, study_uid="9.9")).replicated

    acked: set[tuple[str, str]] = set()
    durability = Durability(index, members, lambda: 2, lambda s, t: (s, t) in acked)
    for n in range(3):  # acknowledged by both owners
        for target in (B, C):
            await OutboxStore(index.db).delivered(f"{study}.1.{n}", target)
            acked.add((f"{study}.1.{n}", target))
            if (n, target) != (2, C):
                assert not (await durability.owed(study)).replicated
    assert (await durability.owed()).replicated
    # A restart with the same members: outbox and checkpoint survived, and so did the
    # clean check (acknowledgements in memory are not needed).
    assert (await owed(index, members, 2)).replicated
    # Other members: owners move, and until the catalog shows copies they are owed.
    moved = await owed(index, _Members(ids=[*MEMBERS, "dd"]), 2)
    assert moved.unconfirmed >= 1 and not moved.replicated
    # Stored later, past the checkpoint: owed again at once.
    await index.add_instance(_keys(study, 7), "7" * 64, 10, source_aet="MODALITY")
    assert (await durability.owed()).copies == 2


async def test_index_counts_held_studies_as_short_outside_a_mesh(index: Index) -> None:
    await index.add_instance(_keys("5.5", 0), "5" * 64, 10, source_aet="MODALITY")
    await index.add_instance(_keys("9.9", 0), "f" * 64, 10, source_aet=FOREIGN_PREFIX + "bb")
    debt = await owed(index, _Members(is_member=False, ids=[]), 2)
    assert debt.studies == debt.short == {"5.5"} and debt.copies == 0


async def test_after_the_members_change_owners_not_known_to_hold_a_copy_are_owed(
    index: Index,
) -> None:
    study = _study_owned({B, C})
    await index.add_instance(_keys(study, 0), "a" * 64, 10, source_aet="MODALITY")
    sop = f"{study}.1.0"
    # Enqueued while this node was the only member: no rows were made.
    last_seq = (await index.changes_since(0))[-1]["seq"]
    await OutboxStore(index.db).enqueue([], (*CHECKPOINT, last_seq))
    alone = _Members(ids=[ME])
    assert (await owed(index, alone, 2)).short == {study}

    acked: set[tuple[str, str]] = set()
    now = [0.0]
    durability = Durability(index, _Members(), lambda: 2, lambda s, t: (s, t) in acked,
                            clock=lambda: now[0])
    debt = await durability.owed()
    assert debt.studies == {study} and debt.unconfirmed == 2 and debt.copies == 0
    assert {t: o.instances for t, o in debt.by_target.items()} == {B: 1, C: 1}
    assert not (await durability.owed(study)).replicated

    # Anti-entropy queues C's copy; B acknowledges one the catalog has not heard of.
    await OutboxStore(index.db).add_to_outbox([(sop, C, study, "a" * 64)])
    acked.add((sop, B))
    debt = await durability.owed()
    # The full check's rows are reused for a second: stale, they only count too much.
    assert debt.unconfirmed == 1 and debt.copies == 1
    now[0] += PLACED_REUSE + 0.1
    debt = await durability.owed()
    assert debt.unconfirmed == 0 and debt.copies == 1 and debt.studies == {study}
    await OutboxStore(index.db).delivered(sop, C)
    await CatalogStore(index.db).record_catalog_changes(C, [
        {"kind": "add", "sop_uid": sop, "study_uid": study, "sha256": "a" * 64}], 1)
    assert (await durability.owed()).replicated
    # Clean for these members: the full check is not repeated while they stay.
    acked.clear()
    assert (await durability.owed()).replicated
    # A catalog entry with other bytes is no copy of ours.
    await CatalogStore(index.db).record_catalog_changes(B, [
        {"kind": "add", "sop_uid": sop, "study_uid": study, "sha256": "b" * 64}], 1)
    placed = await OutboxStore(index.db).received_placement(CHECKPOINT, FOREIGN_PREFIX, study)
    assert [r["held_by"] for r in placed] == [C]
    assert tally([], MEMBERS, ME, 2, True, placed).by_target[B].instances == 1


async def test_full_check_reads_every_page(index: Index, monkeypatch) -> None:
    import replication.durability as durability_module

    monkeypatch.setattr(durability_module, "PLACED_PAGE", 2)
    study = _study_owned({B, C})
    for n in range(5):
        await index.add_instance(_keys(study, n), f"{n:064x}", 10, source_aet="MODALITY")
    last_seq = (await index.changes_since(0))[-1]["seq"]
    await OutboxStore(index.db).enqueue([], (*CHECKPOINT, last_seq))
    debt = await Durability(index, _Members(), lambda: 2).owed()
    assert debt.unconfirmed == 10 and debt.by_target[B].instances == 5
