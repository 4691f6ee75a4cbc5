"""Fetched copies kept in the cache (migration v7's cache_use, owner "replication").

Eviction drops the instance from node's tables and writes a ``remove`` change, in one
transaction, so the change feed tells catalogs elsewhere that this copy is gone.
"""

from __future__ import annotations

from node.cache import CacheEntry
from node.db import Database
from node.index import PRUNE_EMPTY, StoredInstance


class CacheStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def cache_add(self, inst: StoredInstance, now: float) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                "INSERT INTO cache_use (sop_uid, sha256, study_uid, size, last_used)"
                " VALUES (?,?,?,?,?) ON CONFLICT(sop_uid) DO UPDATE SET"
                " last_used = excluded.last_used",
                (inst.sop_uid, inst.sha256, inst.study_uid, inst.size, now),
            )

    async def cache_touch(self, sop_uids: list[str], now: float) -> int:
        """Mark cached instances among ``sop_uids`` used; return how many were cached."""
        async with self._db.write() as conn:
            cur = await conn.executemany(
                "UPDATE cache_use SET last_used = ? WHERE sop_uid = ?",
                [(now, sop) for sop in sop_uids],
            )
            return int(cur.rowcount)

    async def cache_bytes(self) -> int:
        rows = await self._db.conn.execute_fetchall("SELECT COALESCE(SUM(size), 0) FROM cache_use")
        return int(next(iter(rows))[0])

    async def cache_entries(self) -> list[CacheEntry]:
        rows = await self._db.fetchall(
            "SELECT sop_uid, sha256, study_uid, size, last_used FROM cache_use"
        )
        return [CacheEntry(r["sop_uid"], r["study_uid"], int(r["size"]), float(r["last_used"]))
                for r in rows]

    async def evict(self, sop_uids: list[str], now: float) -> list[str]:
        """Drop cached instances from the index (the caller removes the files it gets
        back), and record each removal in the change feed so catalogs forget this copy."""
        gone: list[str] = []
        async with self._db.transaction() as conn:
            for sop in sop_uids:
                rows = await self._db.fetchall(
                    "SELECT c.sha256, c.study_uid FROM cache_use c JOIN instances i"
                    " ON i.sop_uid = c.sop_uid WHERE c.sop_uid = ?", (sop,),
                )
                await conn.execute("DELETE FROM cache_use WHERE sop_uid = ?", (sop,))
                if not rows:
                    continue
                await conn.execute("DELETE FROM instances WHERE sop_uid = ?", (sop,))
                await conn.execute(
                    "INSERT INTO changes (kind, sop_uid, study_uid, at)"
                    " VALUES ('remove', ?, ?, ?)", (sop, rows[0]["study_uid"], now),
                )
                gone.append(rows[0]["sha256"])
            for statement in PRUNE_EMPTY:
                await conn.execute(statement)
        self._db.removals += 1  # committed (see Database.removals)
        return gone
