"""replication/owned.py: the holdings anti-entropy and stand-in scans read, kept current
from the instances' sequence, never claiming a copy this node no longer holds."""

from __future__ import annotations

from dataclasses import replace

from benchmarks.durability import _keys as durability_keys
from node.dicom_header import InstanceKeys
from node.index import AddOutcome, Index
from replication.digest import Held, bucket_digests
from replication.owned import OwnedIndex
from replication.placement import owners
from replication.tombstone_store import Tombstoned, TombstoneStore

MEMBERS = ["aa", "bb", "cc"]


def _keys(n: int) -> InstanceKeys:
    """Instance ``n`` of studies of 10 (benchmarks/durability.py makes them of 100)."""
    return replace(durability_keys(n), study_instance_uid=f"1.2.8.{n // 10}",
                   series_instance_uid=f"1.2.7.{n // 10}")


async def _add(index: Index, start: int, count: int) -> None:
    for n in range(start, start + count):
        outcome, _ = await index.add_instance(_keys(n), f"{n:064x}", 10)
        assert outcome is AddOutcome.STORED


async def _full_digests(index: Index, owner: str) -> dict[int, str]:
    """What every round computed before: every row read, filtered by owner."""
    return bucket_digests(
        Held(study, sop, sha) for study, sop, sha in await index.holdings()
        if owner in owners(study, MEMBERS, 2))


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_digests_follow_additions_and_match_a_full_read(index: Index) -> None:
    owned = OwnedIndex(index, Clock())
    await _add(index, 0, 50)
    for owner in MEMBERS:
        assert await owned.digests(owner, MEMBERS, 2) == await _full_digests(index, owner)
    await _add(index, 50, 30)  # read incrementally: only the new rows
    for owner in MEMBERS:
        assert await owned.digests(owner, MEMBERS, 2) == await _full_digests(index, owner)
    bucket = next(iter(await owned.digests("aa", MEMBERS, 2)))
    listed = await owned.bucket("aa", MEMBERS, 2, bucket)
    rows = {Held(*r) for r in await index.holdings()}
    assert listed and all(h in rows for h in listed)


async def test_a_removal_is_never_claimed_afterwards(index: Index) -> None:
    owned = OwnedIndex(index, Clock())
    await _add(index, 0, 40)
    await owned.digests("aa", MEMBERS, 2)
    await index.remove_instances([f"1.2.9.{n}" for n in range(5)])  # reconciliation
    for owner in MEMBERS:
        assert await owned.digests(owner, MEMBERS, 2) == await _full_digests(index, owner)
    # A deletion's commit, in replication's own store, is seen the same way.
    stone = Tombstoned("1.2.8.2", "sig", "admin", 1.0, "test", {})
    await TombstoneStore(index.db).delete_study(stone, "admin", 2.0)
    everything = await owned.everything()
    assert not any(h.study_uid == "1.2.8.2" for h in everything)
    assert len(everything) == 40 - 5 - 10


async def test_stand_in_scans_read_what_was_added_and_restart_after_a_full_pass(
    index: Index,
) -> None:
    clock = Clock()
    owned = OwnedIndex(index, clock, full_every=600.0)
    await _add(index, 0, 20)
    first, mark = await owned.added_since((-1, 0))
    assert first is None  # never scanned: everything
    await _add(index, 20, 3)
    before = mark
    added, mark = await owned.added_since(before)
    assert [h.sop_uid for h in added or []] == ["1.2.9.20", "1.2.9.21", "1.2.9.22"]
    retried, _ = await owned.added_since(before)  # a round that failed asks again
    assert retried == added
    added, mark = await owned.added_since(mark)
    assert added == []
    clock.now = 601.0  # the periodic full pass: scans start again from the top
    again, _ = await owned.added_since(mark)
    assert again is None
    assert len(await owned.everything()) == 23


async def test_members_changing_gives_a_new_view(index: Index) -> None:
    owned = OwnedIndex(index, Clock())
    await _add(index, 0, 30)
    await owned.digests("aa", MEMBERS, 2)
    four = [*MEMBERS, "dd"]
    rows = await index.holdings()
    expected = bucket_digests(Held(*r) for r in rows if "dd" in owners(r[0], four, 2))
    assert await owned.digests("dd", four, 2) == expected
