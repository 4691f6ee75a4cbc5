"""A peer answering garbage is logged and skipped, as before the wire was typed; a bug of
ours (here: the store raising KeyError) is no longer taken for the peer's and shows.
A real index file, with the catalog's writes and holders stood in for; a fake discovery
answers for the peer: no sockets."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom.dataset import Dataset

from discovery.probe import ProbeFailed
from node.archive import Archive
from node.db import Database
from node.index import Index
from node.query import parse_identifier
from replication.catalog_store import CatalogStore
from replication.deletion import Deletions
from replication.placement import owners
from replication.remote_find import _ask_holders
from replication.service import ReplicationSettings, Replicator
from replication.wire import CHANGES_PATH, DIGEST_PATH, FIND_PATH, TOMBSTONES_PATH

ME, PEER = "me-node", "peer-node"
SHA = "cd" * 32


def _study() -> str:
    """A study the peer owns with two replicas over [ME, PEER]: any does."""
    uid = "1.2.3.1"
    assert PEER in owners(uid, [ME, PEER], 2)
    return uid


class FakeIndex:
    """Node's side of the index as the replicator reads it; the stores it builds from
    ``db`` (a real, migrated index file) are the real ones."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def load_state(self, namespace: str) -> dict[str, Any]:
        return {}

    async def holdings_since(self, seq: int) -> list[tuple[str, str, str, int]]:
        return [(_study(), "1.2.3.1.1", SHA, 1)] if seq < 1 else []


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    index = await Index.open(tmp_path / "index.sqlite3")
    yield index.db
    await index.close()


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[dict[str, Any]], int]]:
    """What the catalog pull hands the catalog store, instead of writing it."""
    seen: list[tuple[str, list[dict[str, Any]], int]] = []

    async def record(self: CatalogStore, peer: str, changes: list[dict[str, Any]],
                     since: int) -> None:
        seen.append((peer, changes, since))

    monkeypatch.setattr(CatalogStore, "record_catalog_changes", record)
    return seen


@pytest.fixture
def peer_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    async def holders(self: CatalogStore, study: str) -> dict[str, int]:
        return {PEER: 1}

    monkeypatch.setattr(CatalogStore, "study_holders", holders)


class FakeArchive:
    def __init__(self, index: FakeIndex) -> None:
        self.index = index


class FakeDiscovery:
    node_id = ME
    roster = None

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def members(self) -> list[str]:
        return [ME, PEER]

    async def ask_member(self, node_id: str, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.answers[path]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _replicator(index: FakeIndex, answers: dict[str, Any]) -> Replicator:
    return Replicator(cast(Archive, FakeArchive(index)), cast(Any, FakeDiscovery(answers)),
                      ReplicationSettings())


GOOD_PAGE = {"changes": [{"seq": 1, "kind": "add", "sop_uid": "1.2.3.1.1",
                          "study_uid": "1.2.3.1", "at": 1.0, "sha256": SHA}],
             "next": 1, "more": False}


async def test_a_good_change_page_reaches_the_catalog(db: Database, recorded: list) -> None:
    await _replicator(FakeIndex(db), {CHANGES_PATH: GOOD_PAGE})._pull_catalog(PEER)
    [(peer, changes, since)] = recorded
    assert (peer, since, changes[0]["sha256"], changes[0]["modality"]) == (PEER, 1, SHA, None)


@pytest.mark.parametrize("garbage", [None, [], "x", {"changes": [], "next": "1", "more": False},
                                     {"changes": [{"kind": "add"}], "next": 1, "more": False},
                                     ProbeFailed("gone")])
async def test_a_garbage_change_page_is_logged_and_skipped(
    garbage: Any, caplog: pytest.LogCaptureFixture, db: Database, recorded: list
) -> None:
    with caplog.at_level(logging.INFO, logger="replication.service"):
        await _replicator(FakeIndex(db), {CHANGES_PATH: garbage})._pull_catalog(PEER)
    assert recorded == []
    assert any("catalog pull from" in r.getMessage() for r in caplog.records)


async def test_a_bug_of_ours_in_the_catalog_pull_is_not_taken_for_the_peer(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def buggy(*args: Any) -> None:
        raise KeyError("our own bug")

    monkeypatch.setattr(CatalogStore, "record_catalog_changes", buggy)
    with pytest.raises(KeyError, match="our own bug"):
        await _replicator(FakeIndex(db), {CHANGES_PATH: GOOD_PAGE})._pull_catalog(PEER)


@pytest.mark.parametrize("garbage", [None, ["0"], {"0": 5}, {"zero": "aa"}, ProbeFailed("x")])
async def test_anti_entropy_with_a_garbage_digest_is_logged_and_skipped(
    garbage: Any, caplog: pytest.LogCaptureFixture, db: Database
) -> None:
    replicator = _replicator(FakeIndex(db), {DIGEST_PATH: garbage})
    replicator._tombstones_read.add(PEER)
    with caplog.at_level(logging.INFO, logger="replication.service"):
        await replicator._repair_with(PEER)
    assert any("anti-entropy with" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("garbage", [None, [], {"same": True}, {"digest": "d"},
                                     {"digest": "d", "tombstones": "x"}, ProbeFailed("x")])
async def test_a_garbage_tombstone_list_is_logged_and_the_peer_counted_as_asked(
    garbage: Any, caplog: pytest.LogCaptureFixture, db: Database
) -> None:
    replicator = _replicator(FakeIndex(db), {TOMBSTONES_PATH: garbage})
    with caplog.at_level(logging.INFO, logger="replication.service"):
        await replicator._pull_tombstones(PEER)
    assert PEER in replicator._tombstones_read
    assert any("tombstone or patient event pull from" in r.getMessage() for r in caplog.records)


async def test_a_same_tombstone_list_applies_nothing(db: Database) -> None:
    index = FakeIndex(db)
    deletions = Deletions(cast(Archive, FakeArchive(index)),
                          cast(Any, FakeDiscovery({TOMBSTONES_PATH: {"digest": "d",
                                                                     "same": True}})))
    await deletions.pull(PEER)


@pytest.mark.parametrize("garbage", [None, {"rows": None}, {"rows": [5]}, {}, ProbeFailed("x")])
async def test_a_holder_answering_garbage_to_find_is_passed_over(
    garbage: Any, db: Database, peer_holds: None
) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = "1.2.3.1"
    parse_identifier(identifier, "STUDY")  # a query the holder could answer
    answer = await _ask_holders(cast(Any, FakeIndex(db)), cast(Any, FakeDiscovery(
        {FIND_PATH: garbage})), lambda holders: list(holders), "1.2.3.1", identifier,
        "STUDY")
    assert answer is None  # no holder answered: the caller falls back on the catalog


async def test_a_holder_answering_rows_to_find_is_believed(
    db: Database, peer_holds: None
) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    rows = [{"SOPInstanceUID": "1.2.3.1.1"}]
    answer = await _ask_holders(cast(Any, FakeIndex(db)), cast(Any, FakeDiscovery(
        {FIND_PATH: {"rows": rows}})), lambda holders: list(holders), "1.2.3.1",
        identifier, "STUDY")
    assert answer == rows
