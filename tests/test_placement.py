"""Rendezvous placement: deterministic, balanced, stable when the membership changes."""

from __future__ import annotations

from collections import Counter

import pytest

from replication.placement import owners, place, rendezvous_order, stand_ins_to_fill

MEMBERS = [f"NODE{i:02d}-XXXXXXX" for i in range(8)]
STUDIES = [f"1.2.826.0.1.3680043.8.498.{i}" for i in range(4000)]


def test_every_node_agrees_whatever_order_it_lists_members_in() -> None:
    for study in STUDIES[:50]:
        assert owners(study, MEMBERS) == owners(study, list(reversed(MEMBERS)))
        assert len(set(owners(study, MEMBERS, 3))) == 3


def test_load_is_balanced_across_members() -> None:
    load = Counter(node for s in STUDIES for node in owners(s, MEMBERS, 2))
    expected = len(STUDIES) * 2 / len(MEMBERS)
    assert set(load) == set(MEMBERS)
    assert all(abs(count - expected) < 0.15 * expected for count in load.values()), load


def test_a_new_member_moves_only_the_studies_it_takes() -> None:
    before = {s: set(owners(s, MEMBERS, 2)) for s in STUDIES}
    grown = [*MEMBERS, "NEWNODE-YYYYYYY"]
    moved = 0
    for study in STUDIES:
        after = set(owners(study, grown, 2))
        if after != before[study]:
            moved += 1
            # Only the newcomer comes in; the other owner stays.
            assert "NEWNODE-YYYYYYY" in after and len(after & before[study]) == 1
    assert moved == pytest.approx(len(STUDIES) * 2 / len(grown), rel=0.15)


def test_more_replicas_than_members_means_every_member() -> None:
    assert sorted(owners("1.2.3", MEMBERS[:2], 3)) == sorted(MEMBERS[:2])
    with pytest.raises(ValueError):
        owners("1.2.3", MEMBERS, 0)


def test_unreachable_owner_gets_a_stand_in_next_in_order() -> None:
    study = STUDIES[7]
    order = rendezvous_order(study, MEMBERS)
    placement = place(study, MEMBERS, 2, unreachable={order[0]})
    assert placement.owners == tuple(order[:2])
    assert placement.stand_ins == {order[0]: order[2]}
    assert placement.targets == (order[2], order[1])
    # Two owners down: two different stand-ins, skipping unreachable spares.
    both = place(study, MEMBERS, 2, unreachable={order[0], order[1], order[2]})
    assert both.stand_ins == {order[0]: order[3], order[1]: order[4]}


def test_a_live_owner_fills_the_stand_in_of_an_owner_that_died_holding_its_copy() -> None:
    study = STUDIES[7]
    order = rendezvous_order(study, MEMBERS)
    dead = {order[0]}
    # The surviving owner restores the second copy; nobody else sends it too.
    assert stand_ins_to_fill(study, MEMBERS, order[1], 2, dead) == [order[2]]
    assert stand_ins_to_fill(study, MEMBERS, order[3], 2, dead) == []
    assert stand_ins_to_fill(study, MEMBERS, order[2], 2, dead) == []  # it is the stand-in
    # Every owner gone: each holder sends, since none knows who else still has it.
    both = {order[0], order[1]}
    assert stand_ins_to_fill(study, MEMBERS, order[4], 2, both) == [order[2], order[3]]
    assert stand_ins_to_fill(study, MEMBERS, order[2], 2, both) == [order[3]]
    assert stand_ins_to_fill(study, MEMBERS, order[1], 2, set()) == []
