"""The one SQLite connection of a node (aiosqlite, WAL), its writers' lock and its errors.

Every store (node's instance store, state, tokens and audit; replication's outbox,
catalog, tombstones and cache) writes through one :class:`Database`, so writers are
serialised by one lock and a transaction spanning their tables stays one transaction.
Commits use ``synchronous=NORMAL``: files are the source of truth and are fsynced before
any answer, and the index can be rebuilt from them (``node.reconcile``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from node.errors import LocalFailure
from node.migrations import MIGRATIONS, Migration, statements


class IndexFailure(RuntimeError, LocalFailure):
    """The index could not be read or written."""


class IndexFull(IndexFailure):
    """SQLite reported a full disk; nothing was recorded."""


# name, number of arguments, function: SQL functions the node's queries call.
SqlFunction = tuple[str, int, Callable[..., Any]]


def failure(exc: sqlite3.Error) -> IndexFailure:
    """The node's error for a SQLite error: the one place a full disk is told apart."""
    full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)
    return IndexFull(str(exc)) if full else IndexFailure(str(exc))


class Database:
    """The connection, owned by the event loop that opened it (other threads hand work
    to it with ``asyncio.run_coroutine_threadsafe``)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self._write_lock = asyncio.Lock()
        # Bumped after each commit that removed instance rows: copies of the holdings
        # kept elsewhere (replication/owned.py) know to read them again.
        self.removals = 0

    @classmethod
    async def open(
        cls, path: Path, functions: Iterable[SqlFunction] = (),
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Database:
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        db = cls(conn)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            for name, arity, function in functions:
                await conn.create_function(name, arity, function, deterministic=True)
            await db._migrate(migrations)
        except BaseException:
            # aiosqlite's worker thread would otherwise keep the process alive.
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        await self.conn.close()

    async def schema_version(self) -> int:
        async with self.conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        current, latest = await self.schema_version(), len(migrations)
        if current > latest:
            raise IndexFailure(
                f"index schema version {current} is newer than this PACSmesh ({latest});"
                " upgrade PACSmesh"
            )
        for version in range(current, latest):
            async with self.transaction() as conn:
                for statement in statements(migrations[version].sql):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {version + 1}")

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        rows = await self.conn.execute_fetchall(sql, tuple(params))
        return [dict(r) for r in rows]

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """Exclusive use of the connection for statements that are each their own
        (implicit) transaction; never inside another writer's transaction."""
        async with self._write_lock:
            try:
                yield self.conn
            except sqlite3.Error as exc:
                raise failure(exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock of the file is taken at
        once, so it cannot fail half-way for a reader turned writer); committed when the
        block ends, rolled back if it raises anything at all (cancellation included)."""
        async with self.write() as conn:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
