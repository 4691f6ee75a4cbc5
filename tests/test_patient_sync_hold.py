"""A query made between a member coming back and the replicator's next round waits for
that member's patient events (replication.patient_sync), bounded; a lone node and a mesh
whose members were all asked answer at once."""

from __future__ import annotations

import asyncio

from node.index import Index
from node.patients import store as store_module
from node.patients.store import PatientStore, index_knows
from replication.patient_sync import PatientEventSync


class Roster:
    """The two things the sync reads of discovery: who the members are, and who we are."""

    node_id = "me"

    def members(self) -> list[str]:
        return ["me", "b", "c"]


async def test_a_member_seen_up_before_the_next_round_holds_queries(index: Index,
                                                                    monkeypatch) -> None:
    monkeypatch.setattr(store_module, "HOLD_BOUND", 0.3)
    store = PatientStore(index.db, index_knows(index))
    await store.open()
    await asyncio.wait_for(store.current(), 0.1)  # lone: no wait
    alive = {"b"}
    now = [100.0]
    sync = PatientEventSync(store, Roster(), clock=lambda: now[0],  # type: ignore[arg-type]
                            alive=lambda: alive)
    now[0] += 10  # past the start-up hold
    sync.asked("b")
    sync.track({"b", "c"}, alive)
    await asyncio.wait_for(store.current(), 0.1)  # every member up was asked
    alive.add("c")  # c is back; no round has run since
    assert sync.due()
    waited = asyncio.get_running_loop().time()
    await store.current()  # held until asked, at most HOLD_BOUND
    assert asyncio.get_running_loop().time() - waited >= 0.25
    sync.asked("c")
    sync.track({"b", "c"}, alive)
    assert not sync.due()
    await asyncio.wait_for(store.current(), 0.1)
    # c seen down by a round, then up again: due once more.
    alive.discard("c")
    sync.track({"b", "c"}, alive)
    alive.add("c")
    assert sync.due()
