"""The one migration list and the one transaction of node.db."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from node.db import Database, IndexFailure, IndexFull, failure
from node.errors import LocalFailure
from node.index import SCHEMA_VERSION, Index
from node.migrations import MIGRATIONS, Migration
from node.query import parse_identifier
from replication.catalog_store import CatalogStore

# Existing data dirs migrate from their user_version through these entries in order, so
# neither the order nor a released entry's SQL may change: append new ones.
OWNERS = ("node", "node", "replication", "replication", "replication", "node", "replication",
          "node", "node", "replication", "node", "node", "node", "node")
# Of the entries released so far (v1-v8: a data dir of any earlier PACSmesh is at one of
# them); the ones since may change until they ship.
RELEASED, SQL_SHA256 = 8, "6825d0a637f00ffceca08e640fe0989c4e52a14c6691a6c94f301d448fc81d17"


def test_migrations_keep_their_order_owners_and_sql() -> None:
    assert SCHEMA_VERSION == len(MIGRATIONS) == len(OWNERS)
    assert tuple(m.owner for m in MIGRATIONS) == OWNERS
    sql = "\x00".join(m.sql for m in MIGRATIONS[:RELEASED])
    assert hashlib.sha256(sql.encode()).hexdigest() == SQL_SHA256


async def test_a_released_data_dir_gets_name_keys_and_answers_by_name(tmp_path: Path) -> None:
    """A v8 index (a data dir of the last release) migrates in place: the names already
    stored, its own and the catalog's, get their folded keys and are found by name."""
    path = tmp_path / "index.sqlite"
    old = await Database.open(path, migrations=MIGRATIONS[:RELEASED])
    async with old.transaction() as conn:
        await conn.execute("INSERT INTO studies (study_uid, patient_name, created_at)"
                           " VALUES ('1.2.1', 'Müller^Zoë', 0)")
        await conn.execute("INSERT INTO catalog_studies (study_uid, patient_name)"
                           " VALUES ('1.2.2', 'MÜLLER^ANNA')")
        await conn.execute("INSERT INTO catalog (study_uid, node_id, sop_uid, sha256,"
                           " series_uid) VALUES ('1.2.2', 'b', '1.2.2.1', 'x', '1.2.2.9')")
    await old.close()
    index = await Index.open(path)
    try:
        index.mesh_view = CatalogStore(index.db)
        assert await index.schema_version() == SCHEMA_VERSION
        keys = await index.db.fetchall("SELECT patient_name_key FROM studies UNION ALL"
                                       " SELECT patient_name_key FROM catalog_studies")
        assert sorted(r["patient_name_key"] for r in keys) == ["muller^anna", "muller^zoe"]
        ds = Dataset()
        ds.QueryRetrieveLevel, ds.PatientName, ds.StudyInstanceUID = "STUDY", "MULLER*", ""
        found = await index.find(parse_identifier(ds), mesh=True)
        assert sorted(r["StudyInstanceUID"] for r in found) == ["1.2.1", "1.2.2"]
    finally:
        await index.close()


def test_index_errors_are_local_failures_and_runtime_errors() -> None:
    assert issubclass(IndexFailure, LocalFailure) and issubclass(IndexFailure, RuntimeError)
    assert isinstance(failure(sqlite3.OperationalError("database or disk is full")), IndexFull)
    plain = failure(sqlite3.OperationalError("no such table: x"))
    assert type(plain) is IndexFailure and str(plain) == "no such table: x"


async def test_a_transaction_commits_or_rolls_back_whole(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "t.sqlite",
                             migrations=(Migration("node", "CREATE TABLE t (x INTEGER UNIQUE);"),))
    try:
        assert await db.schema_version() == 1
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(IndexFailure, match="UNIQUE"):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO t VALUES (2)")
                await conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(KeyError):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO t VALUES (3)")
                raise KeyError("not ours to translate")
        assert not db.conn.in_transaction
        assert [r["x"] for r in await db.fetchall("SELECT x FROM t")] == [1]
    finally:
        await db.close()
