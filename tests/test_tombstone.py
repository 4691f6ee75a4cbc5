"""Tombstones without a network: signing and checking, and what the index does with one."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from discovery.invite import public_key_text
from node.dicom_header import InstanceKeys
from node.index import AddOutcome, Index
from node.reconcile import ReconcileReport, reconcile
from node.storage import Storage
from replication.catalog_store import CatalogStore
from replication.outbox_store import OutboxStore
from replication.tombstone import (
    Tombstone,
    TombstoneError,
    check_tombstone,
    digest,
    make_tombstone,
    supersedes,
)
from replication.tombstone_store import Tombstoned, TombstoneStore
from tests.test_storage_index import small_samples, store

NOW = 1_800_000_000.0
MESH = "mesh-1"
STUDY = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def admin() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _key(admin: Ed25519PrivateKey) -> str:
    return public_key_text(admin.public_key())



def _held_by_peer(study: str, keys: InstanceKeys, sha: str) -> dict[str, str]:
    """One entry of a peer's change feed: it holds this instance."""
    return {"kind": "add", "study_uid": study, "sop_uid": keys.sop_instance_uid, "sha256": sha}

def test_tombstone_survives_json_and_verifies(admin: Ed25519PrivateKey) -> None:
    stone = make_tombstone(admin, MESH, STUDY, "NODE-A", NOW, reason="wrong patient")
    wire = json.loads(json.dumps(stone.to_json()))
    assert check_tombstone(wire, MESH, _key(admin)) == stone


@pytest.mark.parametrize("field, value", [
    ("study", "1.2.826.0.1.3680043.8.498.2"),  # moved onto another study
    ("reason", "other"),
    ("by", "NODE-B"),
    ("at", NOW + 1),
])
def test_tampered_tombstone_is_refused(admin: Ed25519PrivateKey, field: str, value) -> None:
    wire = make_tombstone(admin, MESH, STUDY, "NODE-A", NOW, reason="r").to_json()
    with pytest.raises(TombstoneError, match="not signed by the mesh admin key"):
        check_tombstone({**wire, field: value}, MESH, _key(admin))


def test_forged_foreign_and_malformed_tombstones_are_refused(admin) -> None:
    forged = make_tombstone(Ed25519PrivateKey.generate(), MESH, STUDY, "NODE-A", NOW)
    with pytest.raises(TombstoneError, match="admin key"):
        check_tombstone(forged.to_json(), MESH, _key(admin))
    with pytest.raises(TombstoneError, match="another mesh"):
        check_tombstone(make_tombstone(admin, "mesh-2", STUDY, "A", NOW).to_json(), MESH,
                        _key(admin))
    good = make_tombstone(admin, MESH, STUDY, "A", NOW).to_json()
    for broken in ({**good, "kind": "revoke"}, {k: v for k, v in good.items() if k != "sig"},
                   {**good, "at": "yesterday"}, "not even a dict", None):
        with pytest.raises(TombstoneError, match="malformed"):
            check_tombstone(broken, MESH, _key(admin))


def test_only_study_uids_and_short_reasons_are_signed(admin: Ed25519PrivateKey) -> None:
    for bad in ("", "1.2.abc", "1.02.3", "1." * 40 + "1"):
        with pytest.raises(TombstoneError, match="StudyInstanceUID"):
            make_tombstone(admin, MESH, bad, "A", NOW)
    with pytest.raises(TombstoneError, match="reason"):
        make_tombstone(admin, MESH, STUDY, "A", NOW, reason="x" * 201)


def test_one_tombstone_per_study_the_same_everywhere(admin: Ed25519PrivateKey) -> None:
    first = make_tombstone(admin, MESH, STUDY, "A", NOW)
    again = make_tombstone(admin, MESH, STUDY, "A", NOW + 5)
    assert supersedes(first, again) and not supersedes(again, first)
    other = make_tombstone(admin, MESH, "1.2.3", "A", NOW - 5)
    assert not supersedes(other, first)  # another study: no contest
    assert digest([first.sig, other.sig]) == digest([other.sig, first.sig])
    assert digest([first.sig]) != digest([first.sig, other.sig])


# --- the index ---------------------------------------------------------------------------


def _record(stone: Tombstone) -> Tombstoned:
    return Tombstoned(stone.study_uid, stone.sig, stone.deleted_by, stone.at, stone.reason,
                      stone.to_json())


async def test_deleting_a_study_drops_it_and_refuses_it_afterwards(
    storage: Storage, index: Index, admin: Ed25519PrivateKey
) -> None:
    doomed, kept = small_samples()[0], small_samples()[1]
    doomed_keys, doomed_sha = await store(storage, index, doomed)
    kept_keys, kept_sha = await store(storage, index, kept)
    study = doomed_keys.study_instance_uid
    outbox, catalog = OutboxStore(index.db), CatalogStore(index.db)
    stones = TombstoneStore(index.db)
    await outbox.add_to_outbox([(doomed_keys.sop_instance_uid, "PEER", study, doomed_sha),
                                (kept_keys.sop_instance_uid, "PEER", kept_keys.study_instance_uid,
                                 kept_sha)])
    await catalog.record_catalog_changes("PEER", [_held_by_peer(study, doomed_keys, doomed_sha)], 1)

    stone = make_tombstone(admin, MESH, study, "A", NOW)
    removed = await stones.delete_study(_record(stone), "admin command", NOW + 1)
    storage.purge(removed.objects, removed.conflict_copies)

    assert (removed.instances, removed.bytes, removed.objects) == (1, len(doomed), (doomed_sha,))
    assert not storage.exists(doomed_sha) and storage.exists(kept_sha)
    assert [s["study_uid"] for s in await index.studies()] == [kept_keys.study_instance_uid]
    assert [r.study_uid for r in await outbox.owed_to(["PEER"])] == [
        kept_keys.study_instance_uid]
    assert await catalog.study_holders(study) == {}
    # Nothing brings it back: a store, a queued copy, a peer's catalog that lags behind.
    outcome, _ = await index.add_instance(doomed_keys, doomed_sha, len(doomed), "MODALITY")
    assert outcome is AddOutcome.TOMBSTONED
    assert await outbox.add_to_outbox([(doomed_keys.sop_instance_uid, "P2", study,
                                        doomed_sha)]) == 0
    await catalog.record_catalog_changes("PEER", [_held_by_peer(study, doomed_keys, doomed_sha)], 2)
    assert await catalog.study_holders(study) == {}
    [audit] = await stones.tombstones()
    assert audit.instances_removed == 1 and audit.received_from == "admin command"
    assert audit.document == stone.to_json() and audit.applied_at == NOW + 1


async def test_file_left_by_a_crash_during_deletion_is_removed_at_start(
    storage: Storage, index: Index, admin: Ed25519PrivateKey
) -> None:
    data = small_samples()[0]
    keys, sha = await store(storage, index, data)
    stone = make_tombstone(admin, MESH, keys.study_instance_uid, "A", NOW)
    stones = TombstoneStore(index.db)
    await stones.delete_study(_record(stone), "PEER", NOW)  # crash: files not yet removed
    assert storage.exists(sha)

    assert await reconcile(storage, index) == ReconcileReport(tombstoned_removed=1)
    assert not storage.exists(sha)
    assert (await index.counts()).instances == 0
