"""Pure decisions of mesh retrieval: which holder to ask, which cached copy goes."""

from __future__ import annotations

from node.cache import CacheEntry, evictions
from replication.fetch import rank_holders


def test_holders_ranked_alive_breaker_closed_fewest_failures_first() -> None:
    alive = {"a", "b", "c"}.__contains__
    allowed = lambda n: n != "c"  # noqa: E731 - c's breaker is open
    assert rank_holders(["d", "c", "b", "a"], alive, allowed, {"a": 2}) == ["b", "a"]
    assert rank_holders(["b", "a"], alive, allowed, {}) == ["a", "b"]
    assert rank_holders([], alive, allowed, {}) == []


def test_least_recently_used_goes_first_until_within_budget() -> None:
    entries = [CacheEntry("s1", "X", 40, 3.0), CacheEntry("s2", "X", 40, 1.0),
               CacheEntry("s3", "Y", 40, 2.0)]
    assert evictions(entries, 80, lambda study: False) == ["s2"]
    assert evictions(entries, 0, lambda study: False) == ["s2", "s3", "s1"]
    assert evictions(entries, 120, lambda study: False) == []


def test_owned_studies_and_copies_in_use_are_never_evicted() -> None:
    entries = [CacheEntry("s1", "OWNED", 40, 1.0), CacheEntry("s2", "X", 40, 2.0),
               CacheEntry("s3", "X", 40, 3.0)]
    owned = "OWNED".__eq__
    assert evictions(entries, 0, owned) == ["s2", "s3"]
    assert evictions(entries, 0, owned, keep=frozenset({"s2"})) == ["s3"]
