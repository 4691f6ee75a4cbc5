"""Replication's outbox: one row per (instance, target member) until the copy is acknowledged.

The table lives in the node's index file (migration v3, owner "replication") and is
written through the node's :class:`node.db.Database`, so queueing a copy and moving the
change feed's checkpoint are one transaction.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from node.db import Database
from node.index import UPSERT_STATE
from replication.planner import Copy, Queued

# Copies of a deleted study are never queued, whatever raced the deletion.
_QUEUE_COPY = (
    "INSERT OR IGNORE INTO outbox (sop_uid, target, study_uid, sha256) SELECT ?,?,?,?"
    " WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE study_uid = ?)"
)


def _queue_rows(rows: list[tuple[str, str, str, str]]) -> list[tuple[str, ...]]:
    return [(*row, row[2]) for row in rows]


@dataclass(frozen=True, slots=True)
class TargetDebt:
    """The copies waiting for one target member, and their bytes."""

    copies: int
    bytes: int


NOTHING_OWED = TargetDebt(0, 0)


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- writes -------------------------------------------------------------------------

    async def enqueue(
        self, rows: list[tuple[str, str, str, str]], checkpoint: tuple[str, str, Any]
    ) -> None:
        """Add (sop_uid, target, study_uid, sha256) rows and move a feed checkpoint in the
        same transaction, so a crash can neither lose nor repeat an enqueue."""
        namespace, key, value = checkpoint
        async with self._db.transaction() as conn:
            await conn.executemany(_QUEUE_COPY, _queue_rows(rows))
            await conn.execute(UPSERT_STATE, (namespace, key, json.dumps(value), time.time()))

    async def add_to_outbox(self, rows: list[tuple[str, str, str, str]]) -> int:
        """Queue (sop_uid, target, study_uid, sha256) copies; rows already queued stay."""
        async with self._db.write() as conn:
            before = conn.total_changes
            await conn.executemany(_QUEUE_COPY, _queue_rows(rows))
            return conn.total_changes - before

    async def delivered(self, sop_uid: str, target: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                "DELETE FROM outbox WHERE sop_uid = ? AND target = ?", (sop_uid, target)
            )

    async def drop_rows_not_to(self, members: list[str]) -> int:
        """Delete the rows (owed, hinted or parked) whose target is none of ``members``:
        copies owed to a revoked member, which no send can ever clear."""
        marks = ",".join("?" * len(members))
        async with self._db.write() as conn:
            cur = await conn.execute(f"DELETE FROM outbox WHERE target NOT IN ({marks})",
                                     members)
            return cur.rowcount

    async def postpone(self, sop_uid: str, target: str, next_try: float, error: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_try = ?, last_error = ?"
                " WHERE sop_uid = ? AND target = ?", (next_try, error[:200], sop_uid, target),
            )

    # --- reads --------------------------------------------------------------------------

    async def due(self, now: float, limit: int = 100) -> list[Queued]:
        rows = await self._db.fetchall(
            "SELECT * FROM outbox WHERE next_try <= ? ORDER BY next_try, sop_uid LIMIT ?",
            (now, limit),
        )
        return [Queued.from_row(r) for r in rows]

    async def due_to(self, target: str, now: float, limit: int) -> list[Queued]:
        """Due rows for one target, oldest first: each target is read on its own, so rows
        owed to a member that cannot take them never crowd out another's."""
        rows = await self._db.fetchall(
            "SELECT * FROM outbox WHERE target = ? AND next_try <= ?"
            " ORDER BY next_try, sop_uid LIMIT ?", (target, now, limit),
        )
        return [Queued.from_row(r) for r in rows]

    async def owed_to(self, targets: list[str]) -> list[Copy]:
        marks = ", ".join("?" * len(targets))
        rows = await self._db.fetchall(
            f"SELECT sop_uid, target, study_uid, sha256 FROM outbox WHERE target IN ({marks})",
            targets,
        )
        return [Copy.from_row(r) for r in rows]

    async def outbox_summary(self) -> tuple[int, int]:
        """(rows waiting, studies with a copy still owed to an owner)."""
        rows = await self._db.fetchall(
            "SELECT COUNT(*) AS depth, COUNT(DISTINCT study_uid) AS studies FROM outbox"
        )
        return int(rows[0]["depth"]), int(rows[0]["studies"])

    async def outbox_by_target(self) -> dict[str, TargetDebt]:
        """Target node id -> copies waiting and their bytes, for every target owed a copy."""
        rows = await self._db.fetchall(
            "SELECT o.target, COUNT(*) AS depth, COALESCE(SUM(i.size), 0) AS bytes"
            " FROM outbox o LEFT JOIN instances i ON i.sop_uid = o.sop_uid GROUP BY o.target"
        )
        return {r["target"]: TargetDebt(int(r["depth"]), int(r["bytes"])) for r in rows}

    async def replication_debt(
        self, checkpoint: tuple[str, str], foreign_prefix: str, study_uid: str | None = None,
        with_received: bool = False,
    ) -> list[dict[str, Any]]:
        """What replication still owes, read in one statement (so one snapshot: an enqueue
        committing meanwhile is seen wholly as rows or wholly as pending, never neither).

        Rows ``kind`` 'queued': outbox copies by (study_uid, target), ``n`` of them;
        'pending': per study, instances stored here after the feed ``checkpoint`` (state
        namespace, key) whose source does not start with ``foreign_prefix`` (copies from
        elsewhere are someone else's to place), not yet turned into outbox rows; with
        ``with_received``, 'received': per study, every such instance held here."""
        namespace, key = checkpoint
        only = " AND {col} = ?" if study_uid is not None else ""
        own = "substr(i.source_aet, 1, ?) != ?"
        sql = (
            "SELECT 'queued' AS kind, study_uid, target, COUNT(*) AS n FROM outbox"
            " WHERE 1" + only.format(col="study_uid") + " GROUP BY study_uid, target"
            " UNION ALL SELECT 'pending', c.study_uid, '', COUNT(*) FROM changes c"
            " JOIN instances i ON i.sop_uid = c.sop_uid AND i.seq = c.seq"
            " WHERE c.kind = 'add' AND " + own + " AND c.seq > COALESCE((SELECT"
            " CAST(value AS INTEGER) FROM state WHERE namespace = ? AND key = ?), 0)"
            + only.format(col="c.study_uid") + " GROUP BY c.study_uid"
        )
        params: list[Any] = [study_uid] if study_uid is not None else []
        params += [len(foreign_prefix), foreign_prefix, namespace, key]
        params += [study_uid] if study_uid is not None else []
        if with_received:
            sql += (" UNION ALL SELECT 'received', se.study_uid, '', COUNT(*) FROM instances i"
                    " JOIN series se ON se.series_uid = i.series_uid WHERE " + own
                    + only.format(col="se.study_uid") + " GROUP BY se.study_uid")
            params += [len(foreign_prefix), foreign_prefix]
            params += [study_uid] if study_uid is not None else []
        return await self._db.fetchall(sql, params)

    async def received_placement(
        self, checkpoint: tuple[str, str], foreign_prefix: str, study_uid: str | None = None,
        after_seq: int = 0, limit: int = -1,
    ) -> list[dict[str, Any]]:
        """Each instance stored here from a source not starting with ``foreign_prefix``
        and already past the feed ``checkpoint``: its study, SOP Instance UID, the
        members the catalog says hold the same bytes (``held_by``, comma-separated) and
        the targets it is queued for (``queued_to``); by ``seq`` from ``after_seq``, at
        most ``limit`` (a full scan is read in pages, not to hold up writers)."""
        namespace, key = checkpoint
        only = " AND se.study_uid = ?" if study_uid is not None else ""
        params: list[Any] = [len(foreign_prefix), foreign_prefix, namespace, key, after_seq]
        return await self._db.fetchall(
            "SELECT i.seq, se.study_uid, i.sop_uid,"
            " (SELECT group_concat(k.node_id) FROM catalog k WHERE k.sop_uid = i.sop_uid"
            "  AND k.sha256 = i.sha256) AS held_by,"
            " (SELECT group_concat(o.target) FROM outbox o WHERE o.sop_uid = i.sop_uid)"
            "  AS queued_to"
            " FROM instances i JOIN series se ON se.series_uid = i.series_uid"
            " WHERE substr(i.source_aet, 1, ?) != ? AND i.seq <= COALESCE((SELECT"
            " CAST(value AS INTEGER) FROM state WHERE namespace = ? AND key = ?), 0)"
            " AND i.seq > ?" + only + " ORDER BY i.seq LIMIT ?",
            params + ([study_uid] if study_uid is not None else []) + [limit],
        )
