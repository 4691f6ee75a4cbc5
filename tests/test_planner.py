"""The replicator's decisions, pure: rows for a change, hinted copies, who sends a copy
an owner lacks, when a row may start. No sockets, no SQLite; the clock is a variable."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from replication.placement import owners, place, rendezvous_order
from replication.planner import (
    Change,
    Copy,
    DownSince,
    Held,
    PeerSchedule,
    Queued,
    RepairSenders,
    StandInDuties,
    copies_for_changes,
    hinted_copies,
    not_yet_held,
    repair_sender,
    startable,
    upstream_of,
)

A, B, C, D = "AAAAAAA-1111111", "BBBBBBB-2222222", "CCCCCCC-3333333", "DDDDDDD-4444444"
STUDIES = [f"1.2.826.0.1.3680043.8.498.{i}" for i in range(500)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _change(sop: str, study: str, source: str = "STORESCU", kind: str = "add",
            sha: str = "ab" * 32) -> Change:
    return Change(kind, sop, study, sha, source)


def test_rows_are_frozen() -> None:
    copy = Copy("1.2.3", A, "1.2", "ab" * 32)
    with pytest.raises(FrozenInstanceError):
        copy.target = B  # type: ignore[misc]
    assert Copy.from_row(dict(sop_uid="1.2.3", target=A, study_uid="1.2",
                              sha256="ab" * 32)) == copy


def test_a_change_gets_one_row_per_owner_other_than_this_node() -> None:
    members = [A, B, C, D]
    study = next(s for s in STUDIES if A in owners(s, members, 2))
    (other,) = set(owners(study, members, 2)) - {A}
    rows = copies_for_changes([_change("1.1", study)], members, A, 2)
    assert rows == [Copy("1.1", other, study, "ab" * 32)]
    elsewhere = next(s for s in STUDIES if A not in owners(s, members, 2))
    assert {c.target for c in copies_for_changes([_change("1.2", elsewhere)], members, A, 2)} \
        == set(owners(elsewhere, members, 2))


def test_copies_from_the_mesh_removals_and_rows_without_bytes_are_not_forwarded() -> None:
    changes = [_change("1.1", STUDIES[0], source="mesh:BBBBBBB-2222222"),
               _change("1.2", STUDIES[0], kind="remove"), _change("1.3", STUDIES[0], sha="")]
    assert copies_for_changes(changes, [A, B, C], A, 2) == []


def _study_where(members: list[str], test: object) -> str:
    return next(s for s in STUDIES if test(s))  # type: ignore[operator]


def test_hinted_copies_go_from_the_live_owner_only_once_each() -> None:
    members = [A, B, C, D]
    # B is down; the study is B's and A's; C and D hold nothing of it.
    study = _study_where(members, lambda s: set(owners(s, members, 2)) == {A, B})
    stand_in = place(study, members, 2, {B}).stand_ins[B]
    held = [Held(study, "1.1", "aa" * 32), Held(study, "1.2", "bb" * 32)]
    by_owner = StandInDuties(A, 2)
    hints = hinted_copies([*held, held[0]], lambda s: by_owner.of(s, members, {B}))
    assert sorted(hints, key=lambda c: c.sop_uid) == [
        Copy("1.1", stand_in, study, "aa" * 32), Copy("1.2", stand_in, study, "bb" * 32)]
    # Any other holder (the stand-in after its copy, or a node B's rows sit at) sends none.
    for me in set(members) - {A, B}:
        duties = StandInDuties(me, 2)
        assert hinted_copies(held, lambda s, d=duties: d.of(s, members, {B})) == []
    # With every owner down, each holder sends (nobody else is sure to hold it).
    down = {A, B}
    spare = set(place(study, members, 2, down).stand_ins.values())
    for me in set(members) - down:
        duties = StandInDuties(me, 2)
        assert {c.target for c in hinted_copies(held, lambda s, d=duties: d.of(s, members,
                                                                                 down))} \
            == spare - {me}


def test_a_stand_in_that_holds_its_hinted_copy_or_just_got_it_is_not_sent_it_again() -> None:
    hints = [Copy("1.1", C, "1.2", "aa" * 32), Copy("1.2", C, "1.2", "bb" * 32),
             Copy("1.3", C, "1.2", "cc" * 32)]
    held = {C: {"1.1": "aa" * 32, "1.3": "ff" * 32}}  # 1.3: other bytes there
    assert not_yet_held(hints, held, {("1.2", C)}) == [hints[2]]


def _founder_case() -> tuple[str, list[str]]:
    """A study that A (the founder) stored and B got from A, owned after C's join by C:
    what anti-entropy at A and at B each find missing at C."""
    members = [A, B, C]
    study = _study_where(members, lambda s: C in owners(s, members, 2)
                         and set(owners(s, [A, B], 2)) == {A, B})
    return study, members


def test_the_ci_duplicate_two_holders_of_a_study_both_repair_a_new_owner_once() -> None:
    """The CI failure of test_owner_killed_mid_transfer_...: when C joined, the founder's
    instance was held by A (which stored it) and B (its owner until then, which got it
    from A); both compared holdings with C in the same second, both queued the copy, and
    C received it twice. Now each holder plans from what it knows, and one copy goes."""
    study, members = _founder_case()
    missing = Copy("1.1", C, study, "aa" * 32)
    queued = []
    for me, other, came_from in ((A, B, ""), (B, A, A)):
        alive = {A, B, C} - {me}
        plan = RepairSenders(Clock()).plan(C, [missing], {"1.1": {other}}, members, alive, me,
                                           {"1.1": came_from})
        queued += [(me, c) for c in plan]
    # The node that stored it sends; its outbox may owe the copy already.
    assert queued == [(A, missing)]


def test_copies_are_traced_back_the_way_they_came() -> None:
    """A member back from an outage (B) lacks what A stored meanwhile (A's outbox owes
    it), what C got from A, and what D, B's stand-in, got from C: only A sends."""
    members = [A, B, C, D]
    study = STUDIES[0]
    missing = Copy("1.1", B, study, "aa" * 32)
    everyone = {A, B, C, D}
    plans = {me: RepairSenders(Clock()).plan(B, [missing], {"1.1": everyone - {me, B}},
                                             members, everyone - {me}, me, {"1.1": came})
             for me, came in ((A, ""), (C, A), (D, C))}
    assert plans == {A: [missing], C: [], D: []}
    # C's source gone: C and D agree on one sender by rendezvous order among holders.
    alive = {B, C, D}
    plans = {me: RepairSenders(Clock()).plan(B, [missing], {"1.1": {C, D} - {me}}, members,
                                             alive - {me}, me, {"1.1": came})
             for me, came in ((C, None), (D, None))}
    chosen = next(n for n in rendezvous_order(study, members) if n in (C, D))
    assert {me for me, plan in plans.items() if plan} == {chosen}
    assert upstream_of("mesh:CCCCCCC-3333333", members) == C
    assert upstream_of("STORESCU", members) == ""
    assert upstream_of("mesh:GONEGON-0000000", members) is None


def test_a_holder_that_knows_of_no_other_sends_at_once() -> None:
    study, members = _founder_case()
    missing = Copy("1.1", C, study, "aa" * 32)
    for me in (A, B):
        assert RepairSenders(Clock()).plan(C, [missing], {}, members, {A, B, C}, me) \
            == [missing]


def test_the_chosen_sender_unreachable_or_silent_does_not_leave_the_copy_missing() -> None:
    study, members = _founder_case()
    chosen = next(n for n in rendezvous_order(study, members) if n in (A, B))
    (other,) = {A, B} - {chosen}
    missing = Copy("1.1", C, study, "aa" * 32)
    # Chosen one down: the other holder sends at once.
    assert repair_sender(study, C, {A, B}, members, {C}, other) == other
    clock = Clock()
    senders = RepairSenders(clock, patience=60)
    assert senders.plan(C, [missing], {"1.1": {chosen}}, members, {A, B, C}, other) == []
    clock.now += 30
    assert senders.plan(C, [missing], {"1.1": {chosen}}, members, {A, B, C}, other) == []
    clock.now += 30  # still missing a minute after it was first seen missing
    assert senders.plan(C, [missing], {"1.1": {chosen}}, members, {A, B, C}, other) \
        == [missing]
    # Once the peer has it, the wait is forgotten: lost again, it waits afresh.
    assert senders.plan(C, [], {}, members, {A, B, C}, other) == []
    assert senders.plan(C, [missing], {"1.1": {chosen}}, members, {A, B, C}, other) == []


def test_the_peer_that_lacks_a_copy_never_counts_as_its_sender() -> None:
    study, members = _founder_case()
    assert repair_sender(study, C, {C}, members, {A, B, C}, A) is None


def _queued(sop: str, target: str, next_try: float = 0.0) -> Queued:
    return Queued(Copy(sop, target, "1.2", "aa" * 32), next_try, 0)


def test_rows_start_when_due_to_reachable_targets_each_within_its_own_slots() -> None:
    rows = [_queued(f"1.{i}", B) for i in range(6)] + [_queued("2.1", C),
                                                      _queued("2.2", C, next_try=2000.0),
                                                      _queued("3.1", D)]
    started = startable(rows, 1000.0, {B, C}, {("1.0", B)}, lambda t: True, {B: 1}, 4)
    # B: one busy + three new; the one already on its way is not started again.
    assert [r.copy.sop_uid for r in started] == ["1.1", "1.2", "1.3", "2.1"]
    # A target whose link hangs (all its slots busy) keeps no one else waiting.
    started = startable(rows, 1000.0, {B, C}, set(), lambda t: True, {B: 4}, 4)
    assert [r.copy.sop_uid for r in started] == ["2.1"]
    # An open breaker holds that target's rows back.
    assert [r.copy.sop_uid for r in startable(rows, 1000.0, {B, C}, set(), lambda t: t != B,
                                              {}, 4)] == ["2.1"]


def test_per_peer_schedules_skip_the_running_and_the_down_and_put_the_returning_first() -> None:
    clock = Clock()
    schedule = PeerSchedule(clock, 10.0)
    assert schedule.due([A, B, C], {B, C}, A) == [B, C]
    clock.now += 5
    assert schedule.due([A, B, C], {B, C}, A) == []
    clock.now += 5
    assert schedule.due([A, B, C], {B, C}, A, running={B}) == [C]  # B's last one still runs
    assert schedule.due([A, B, C], {C}, A) == []  # B down: loses its turn
    assert schedule.due([A, B, C], {B, C}, A) == [B]  # back: at once
    schedule.again(C)
    assert schedule.due([A, B, C], {B, C}, A) == [C]


def test_an_owner_is_long_down_after_hint_after_seconds_unreachable() -> None:
    clock = Clock()
    down = DownSince(clock, 60.0)
    assert down.long_down([A, B, C], {C}, A) == set()
    clock.now += 59
    assert down.long_down([A, B, C], {C}, A) == set()
    clock.now += 1
    assert down.long_down([A, B, C], {C}, A) == {B}
    assert down.long_down([A, B, C], {B, C}, A) == set()  # back: the count restarts
    clock.now += 1
    assert down.long_down([A, B, C], {C}, A) == set()
