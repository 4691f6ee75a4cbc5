"""The one migration list and the one transaction of node.db."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from node.db import Database, IndexFailure, IndexFull, failure
from node.errors import LocalFailure
from node.index import SCHEMA_VERSION
from node.migrations import MIGRATIONS, Migration

# Existing data dirs migrate from their user_version through these entries in order, so
# neither the order nor a released entry's SQL may change: append new ones.
OWNERS = ("node", "node", "replication", "replication", "replication", "node", "replication",
          "node")
SQL_SHA256 = "6825d0a637f00ffceca08e640fe0989c4e52a14c6691a6c94f301d448fc81d17"


def test_migrations_keep_their_order_owners_and_sql() -> None:
    assert SCHEMA_VERSION == len(MIGRATIONS) == 8
    assert tuple(m.owner for m in MIGRATIONS) == OWNERS
    sql = "\x00".join(m.sql for m in MIGRATIONS)
    assert hashlib.sha256(sql.encode()).hexdigest() == SQL_SHA256


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
