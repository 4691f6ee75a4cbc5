"""Anti-entropy digests: equal holdings agree; a difference is found and named."""

from __future__ import annotations

from replication.digest import (
    Held,
    bucket_digests,
    bucket_of,
    compare_instances,
    differing_buckets,
)


def _holdings(studies: int, per_study: int) -> list[Held]:
    return [
        Held(f"1.2.3.{s}", f"1.2.3.{s}.{i}", f"{s:04d}{i:04d}".ljust(64, "0"))
        for s in range(studies) for i in range(per_study)
    ]


def test_same_holdings_in_any_order_give_the_same_digests() -> None:
    held = _holdings(300, 3)
    assert bucket_digests(held) == bucket_digests(list(reversed(held)))
    assert differing_buckets(bucket_digests(held), bucket_digests(held)) == []


def test_one_missing_or_changed_instance_is_one_differing_bucket() -> None:
    held = _holdings(300, 3)
    missing = held[:10] + held[11:]
    assert differing_buckets(bucket_digests(held), bucket_digests(missing)) == [
        bucket_of(held[10].study_uid)
    ]
    corrupt = [*held[:-1], Held(held[-1].study_uid, held[-1].sop_uid, "f" * 64)]
    assert differing_buckets(bucket_digests(held), bucket_digests(corrupt)) == [
        bucket_of(held[-1].study_uid)
    ]


def test_an_emptied_node_shows_as_everything_to_offer_nothing_to_delete() -> None:
    held = {h.sop_uid: h.sha256 for h in _holdings(5, 2)}
    repair = compare_instances(held, {})
    assert repair.to_offer == tuple(sorted(held)) and repair.to_fetch == ()
    assert compare_instances({}, held).to_fetch == tuple(sorted(held))


def test_different_bytes_for_one_uid_are_flagged_not_chosen() -> None:
    ours = {"1.1": "a" * 64, "1.2": "b" * 64}
    theirs = {"1.1": "a" * 64, "1.2": "c" * 64, "1.3": "d" * 64}
    repair = compare_instances(ours, theirs)
    assert repair == type(repair)(to_fetch=("1.3",), to_offer=(), disagree=("1.2",))
