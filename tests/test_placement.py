"""Rendezvous placement: deterministic, balanced, stable when the membership changes."""

from __future__ import annotations

from collections import Counter

import pytest

from replication.placement import owners, place, rendezvous_order

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
