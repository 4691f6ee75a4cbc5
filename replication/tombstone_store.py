"""Studies deleted mesh-wide: one signed tombstone each (migration v5, owner "replication").

The document is kept as it spreads, with this node's audit of applying it. Deleting a
study removes node's rows and replication's in the one transaction that records the
tombstone; node's ingest trigger (v6) refuses the study from then on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from node.db import Database


@dataclass(frozen=True, slots=True)
class Tombstoned:
    """A deleted study as this node recorded it; ``document`` is the signed original."""

    study_uid: str
    sig: str
    deleted_by: str
    deleted_at: float
    reason: str
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StudyDeletion:
    instances: int
    bytes: int
    # Files to remove: the instances' objects, and conflicting copies kept aside.
    objects: tuple[str, ...]
    conflict_copies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TombstoneRecord:
    """A tombstone held here with this node's audit of applying it."""

    study_uid: str
    sig: str
    deleted_by: str
    deleted_at: float
    reason: str
    document: dict[str, Any]  # the signed original, as it spreads
    received_from: str
    applied_at: float
    instances_removed: int
    bytes_removed: int


def _tombstoned(row: dict[str, Any]) -> Tombstoned:
    return Tombstoned(row["study_uid"], row["sig"], row["deleted_by"], row["deleted_at"],
                      row["reason"], json.loads(row["document"]))


class TombstoneStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def tombstone(self, study_uid: str) -> Tombstoned | None:
        rows = await self._db.fetchall(
            "SELECT * FROM tombstones WHERE study_uid = ?", (study_uid,)
        )
        return _tombstoned(rows[0]) if rows else None

    async def tombstones(self) -> list[TombstoneRecord]:
        """Every tombstone with this node's audit of it, newest first."""
        rows = await self._db.fetchall("SELECT * FROM tombstones ORDER BY deleted_at DESC")
        return [
            TombstoneRecord(
                r["study_uid"], r["sig"], r["deleted_by"], r["deleted_at"], r["reason"],
                json.loads(r["document"]), r["received_from"], r["applied_at"],
                int(r["instances_removed"]), int(r["bytes_removed"]),
            )
            for r in rows
        ]

    async def tombstone_sigs(self) -> list[str]:
        """The signatures of the tombstones held here: all a gossip digest needs."""
        rows = await self._db.conn.execute_fetchall("SELECT sig FROM tombstones")
        return [str(r[0]) for r in rows]

    async def study_files(self, study_uid: str) -> tuple[list[str], list[str]]:
        """The objects and kept conflict copies of a study, as :meth:`delete_study` would
        return them now."""
        held = await self._db.fetchall(
            "SELECT i.sha256 FROM instances i JOIN series se"
            " ON i.series_uid = se.series_uid WHERE se.study_uid = ?", (study_uid,))
        copies = await self._db.fetchall(
            "SELECT received_sha256 FROM conflicts WHERE kept_copy = 1 AND sop_uid IN"
            " (SELECT sop_uid FROM changes WHERE study_uid = ?)", (study_uid,))
        return [r["sha256"] for r in held], [r["received_sha256"] for r in copies]

    async def delete_study(
        self, stone: Tombstoned, received_from: str, now: float
    ) -> StudyDeletion:
        """Record the study's tombstone and drop everything indexed about it (instances,
        queued copies, catalog entries, conflict records), in one transaction. The
        caller removes the files it returns, having recorded them first (start-up
        finishes the removal after a crash, node/reconcile.py)."""
        study = (stone.study_uid,)
        async with self._db.transaction() as c:
            held = await self._db.fetchall(
                "SELECT i.sop_uid, i.sha256, i.size FROM instances i JOIN series se"
                " ON i.series_uid = se.series_uid WHERE se.study_uid = ?", study,
            )
            sops = [(r["sop_uid"],) for r in held]
            copies = await self._db.fetchall(
                "SELECT received_sha256 FROM conflicts WHERE kept_copy = 1 AND sop_uid IN"
                " (SELECT sop_uid FROM changes WHERE study_uid = ?)", study,
            )
            await c.execute(
                "DELETE FROM conflicts WHERE sop_uid IN"
                " (SELECT sop_uid FROM changes WHERE study_uid = ?)", study,
            )
            await c.executemany("DELETE FROM instances WHERE sop_uid = ?", sops)
            await c.execute("DELETE FROM series WHERE study_uid = ?", study)
            await c.execute("DELETE FROM studies WHERE study_uid = ?", study)
            await c.execute("DELETE FROM outbox WHERE study_uid = ?", study)
            await c.execute("DELETE FROM catalog WHERE study_uid = ?", study)
            await c.execute("DELETE FROM catalog_series WHERE study_uid = ?", study)
            await c.execute("DELETE FROM catalog_studies WHERE study_uid = ?", study)
            await c.execute("DELETE FROM cache_use WHERE study_uid = ?", study)
            deletion = StudyDeletion(
                len(held), sum(int(r["size"]) for r in held),
                tuple(r["sha256"] for r in held),
                tuple(r["received_sha256"] for r in copies),
            )
            await c.execute(
                "INSERT INTO tombstones (study_uid, sig, deleted_by, deleted_at, reason,"
                " document, received_from, applied_at, instances_removed, bytes_removed)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (stone.study_uid, stone.sig, stone.deleted_by, stone.deleted_at,
                 stone.reason, json.dumps(stone.document), received_from, now,
                 deletion.instances, deletion.bytes),
            )
        self._db.removals += 1  # committed (see Database.removals)
        return deletion

    async def replace_tombstone(self, stone: Tombstoned) -> None:
        """Keep another signed tombstone for an already deleted study (see
        ``replication.tombstone.supersedes``); this node's audit of it stays."""
        async with self._db.write() as conn:
            await conn.execute(
                "UPDATE tombstones SET sig = ?, deleted_by = ?, deleted_at = ?, reason = ?,"
                " document = ? WHERE study_uid = ?",
                (stone.sig, stone.deleted_by, stone.deleted_at, stone.reason,
                 json.dumps(stone.document), stone.study_uid),
            )
