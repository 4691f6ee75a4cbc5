"""The SQLite index (aiosqlite, WAL), owned by one asyncio event loop.

Every method is a coroutine that must run on the loop that opened the index; other
threads hand work to it with ``asyncio.run_coroutine_threadsafe``. Files are the source
of truth: the index can always be rebuilt from them (see ``node.reconcile``), which is
why commits use ``synchronous=NORMAL`` while object files are fsynced before any answer.
"""

from __future__ import annotations

import asyncio
import enum
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from node.dicom_header import InstanceKeys
from node.query import Query, pn_match, tm_norm


class IndexFailure(RuntimeError):
    """The index could not be read or written."""


class IndexFull(IndexFailure):
    """SQLite reported a full disk; nothing was recorded."""


# Each entry upgrades the schema by one version; never edit a released entry, append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE studies (
        study_uid TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL DEFAULT '',
        patient_name TEXT NOT NULL DEFAULT '',
        patient_birth_date TEXT NOT NULL DEFAULT '',
        patient_sex TEXT NOT NULL DEFAULT '',
        study_date TEXT NOT NULL DEFAULT '',
        study_time TEXT NOT NULL DEFAULT '',
        accession_number TEXT NOT NULL DEFAULT '',
        study_id TEXT NOT NULL DEFAULT '',
        study_description TEXT NOT NULL DEFAULT '',
        referring_physician_name TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE INDEX studies_patient ON studies(patient_id);
    CREATE INDEX studies_date ON studies(study_date);
    CREATE INDEX studies_accession ON studies(accession_number);
    CREATE TABLE series (
        series_uid TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL REFERENCES studies(study_uid),
        modality TEXT NOT NULL DEFAULT '',
        series_number TEXT NOT NULL DEFAULT '',
        series_description TEXT NOT NULL DEFAULT '',
        series_date TEXT NOT NULL DEFAULT '',
        series_time TEXT NOT NULL DEFAULT '',
        body_part_examined TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX series_study ON series(study_uid);
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        sop_uid TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE instances (
        sop_uid TEXT PRIMARY KEY,
        series_uid TEXT NOT NULL REFERENCES series(series_uid),
        sop_class_uid TEXT NOT NULL,
        transfer_syntax_uid TEXT NOT NULL,
        instance_number TEXT NOT NULL DEFAULT '',
        rows INTEGER,
        columns INTEGER,
        number_of_frames TEXT NOT NULL DEFAULT '',
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        source_aet TEXT NOT NULL DEFAULT '',
        received_at REAL NOT NULL,
        seq INTEGER NOT NULL UNIQUE REFERENCES changes(seq)
    );
    CREATE INDEX instances_series ON instances(series_uid);
    CREATE INDEX instances_sha ON instances(sha256);
    CREATE TABLE conflicts (
        id INTEGER PRIMARY KEY,
        sop_uid TEXT NOT NULL,
        stored_sha256 TEXT NOT NULL,
        received_sha256 TEXT NOT NULL,
        received_size INTEGER NOT NULL,
        kept_copy INTEGER NOT NULL,
        source_aet TEXT NOT NULL DEFAULT '',
        at REAL NOT NULL
    );
    """,
    # v2: small documents other parts of the node keep across restarts (e.g. last-known
    # peer addresses), by namespace and key. The index stays ignorant of what they mean.
    """
    CREATE TABLE state (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (namespace, key)
    );
    """,
    # v3: replication's outbox, one row per (instance, target node) until acknowledged.
    """
    CREATE TABLE outbox (
        sop_uid TEXT NOT NULL,
        target TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try REAL NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (sop_uid, target)
    );
    CREATE INDEX outbox_due ON outbox(next_try);
    """,
    # v4: the mesh catalog: which member holds which instance, learned from change feeds.
    """
    CREATE TABLE catalog (
        study_uid TEXT NOT NULL,
        node_id TEXT NOT NULL,
        sop_uid TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (study_uid, node_id, sop_uid)
    );
    CREATE INDEX catalog_node ON catalog(node_id);
    """,
    # v5: studies deleted mesh-wide, one signed tombstone each (the document is kept as
    # it spreads), with this node's audit of applying it: when, and what it removed.
    """
    CREATE TABLE tombstones (
        study_uid TEXT PRIMARY KEY,
        sig TEXT NOT NULL,
        deleted_by TEXT NOT NULL,
        deleted_at REAL NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        document TEXT NOT NULL,
        received_from TEXT NOT NULL,
        applied_at REAL NOT NULL,
        instances_removed INTEGER NOT NULL DEFAULT 0,
        bytes_removed INTEGER NOT NULL DEFAULT 0
    );
    """,
    # v6: one INSERT records a stored instance (study, series, change, instance rows),
    # so an ingest costs one hand-off to the database thread instead of seven; a study
    # deleted mesh-wide is refused inside that statement.
    """
    CREATE VIEW ingest AS SELECT
        '' AS study_uid, '' AS patient_id, '' AS patient_name, '' AS patient_birth_date,
        '' AS patient_sex, '' AS study_date, '' AS study_time, '' AS accession_number,
        '' AS study_id, '' AS study_description, '' AS referring_physician_name,
        '' AS series_uid, '' AS modality, '' AS series_number, '' AS series_description,
        '' AS series_date, '' AS series_time, '' AS body_part_examined,
        '' AS sop_uid, '' AS sop_class_uid, '' AS transfer_syntax_uid,
        '' AS instance_number, 0 AS rows, 0 AS columns, '' AS number_of_frames,
        '' AS sha256, 0 AS size, '' AS source_aet, 0.0 AS received_at
    WHERE 0;
    CREATE TRIGGER ingest_insert INSTEAD OF INSERT ON ingest BEGIN
        SELECT RAISE(ABORT, 'study deleted (tombstone)')
        WHERE EXISTS (SELECT 1 FROM tombstones WHERE study_uid = NEW.study_uid);
        INSERT OR IGNORE INTO studies (study_uid, patient_id, patient_name,
            patient_birth_date, patient_sex, study_date, study_time, accession_number,
            study_id, study_description, referring_physician_name, created_at)
        VALUES (NEW.study_uid, NEW.patient_id, NEW.patient_name, NEW.patient_birth_date,
            NEW.patient_sex, NEW.study_date, NEW.study_time, NEW.accession_number,
            NEW.study_id, NEW.study_description, NEW.referring_physician_name,
            NEW.received_at);
        INSERT OR IGNORE INTO series (series_uid, study_uid, modality, series_number,
            series_description, series_date, series_time, body_part_examined)
        VALUES (NEW.series_uid, NEW.study_uid, NEW.modality, NEW.series_number,
            NEW.series_description, NEW.series_date, NEW.series_time,
            NEW.body_part_examined);
        INSERT INTO changes (kind, sop_uid, study_uid, at)
        VALUES ('add', NEW.sop_uid, NEW.study_uid, NEW.received_at);
        INSERT INTO instances (sop_uid, series_uid, sop_class_uid, transfer_syntax_uid,
            instance_number, rows, columns, number_of_frames, sha256, size, source_aet,
            received_at, seq)
        VALUES (NEW.sop_uid, NEW.series_uid, NEW.sop_class_uid, NEW.transfer_syntax_uid,
            NEW.instance_number, NEW.rows, NEW.columns, NEW.number_of_frames, NEW.sha256,
            NEW.size, NEW.source_aet, NEW.received_at,
            (SELECT max(seq) FROM changes));
    END;
    """,
    # v7: the catalog carries what C-FIND needs (patient, study and series keys on their
    # own tables, instance keys on its rows), so any node answers for studies held
    # anywhere; mesh_* views are this node's holdings plus the catalog's for the rest,
    # one row per entity. Fetched copies kept in the cache are listed in cache_use. The
    # catalog's feed checkpoints are reset so the new keys are read in again.
    """
    ALTER TABLE catalog ADD COLUMN series_uid TEXT NOT NULL DEFAULT '';
    ALTER TABLE catalog ADD COLUMN sop_class_uid TEXT NOT NULL DEFAULT '';
    ALTER TABLE catalog ADD COLUMN transfer_syntax_uid TEXT NOT NULL DEFAULT '';
    ALTER TABLE catalog ADD COLUMN instance_number TEXT NOT NULL DEFAULT '';
    ALTER TABLE catalog ADD COLUMN rows INTEGER;
    ALTER TABLE catalog ADD COLUMN columns INTEGER;
    ALTER TABLE catalog ADD COLUMN number_of_frames TEXT NOT NULL DEFAULT '';
    ALTER TABLE catalog ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX catalog_sop ON catalog(sop_uid);
    CREATE TABLE catalog_studies (
        study_uid TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL DEFAULT '',
        patient_name TEXT NOT NULL DEFAULT '',
        patient_birth_date TEXT NOT NULL DEFAULT '',
        patient_sex TEXT NOT NULL DEFAULT '',
        study_date TEXT NOT NULL DEFAULT '',
        study_time TEXT NOT NULL DEFAULT '',
        accession_number TEXT NOT NULL DEFAULT '',
        study_id TEXT NOT NULL DEFAULT '',
        study_description TEXT NOT NULL DEFAULT '',
        referring_physician_name TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE catalog_series (
        series_uid TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL,
        modality TEXT NOT NULL DEFAULT '',
        series_number TEXT NOT NULL DEFAULT '',
        series_description TEXT NOT NULL DEFAULT '',
        series_date TEXT NOT NULL DEFAULT '',
        series_time TEXT NOT NULL DEFAULT '',
        body_part_examined TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX catalog_series_study ON catalog_series(study_uid);
    CREATE VIEW mesh_studies AS
        SELECT study_uid, patient_id, patient_name, patient_birth_date, patient_sex,
            study_date, study_time, accession_number, study_id, study_description,
            referring_physician_name FROM studies
        UNION ALL
        SELECT c.study_uid, c.patient_id, c.patient_name, c.patient_birth_date,
            c.patient_sex, c.study_date, c.study_time, c.accession_number, c.study_id,
            c.study_description, c.referring_physician_name FROM catalog_studies c
        WHERE NOT EXISTS (SELECT 1 FROM studies s WHERE s.study_uid = c.study_uid)
            AND EXISTS (SELECT 1 FROM catalog k WHERE k.study_uid = c.study_uid);
    CREATE VIEW mesh_series AS
        SELECT series_uid, study_uid, modality, series_number, series_description,
            series_date, series_time, body_part_examined FROM series
        UNION ALL
        SELECT c.series_uid, c.study_uid, c.modality, c.series_number,
            c.series_description, c.series_date, c.series_time, c.body_part_examined
        FROM catalog_series c
        WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.series_uid = c.series_uid)
            AND EXISTS (SELECT 1 FROM catalog k WHERE k.study_uid = c.study_uid
                        AND k.series_uid = c.series_uid);
    CREATE VIEW mesh_instances AS
        SELECT sop_uid, series_uid, sop_class_uid, transfer_syntax_uid, instance_number,
            rows, columns, number_of_frames, sha256, size, 1 AS local FROM instances
        UNION ALL
        SELECT c.sop_uid, c.series_uid, c.sop_class_uid, c.transfer_syntax_uid,
            c.instance_number, c.rows, c.columns, c.number_of_frames, c.sha256, c.size,
            0 AS local FROM catalog c
        WHERE c.series_uid != ''
            AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.sop_uid = c.sop_uid)
        GROUP BY c.sop_uid;
    CREATE TABLE cache_use (
        sop_uid TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        size INTEGER NOT NULL,
        last_used REAL NOT NULL
    );
    DELETE FROM state WHERE namespace = 'catalog';
    """,
    # v8: the audit trail (append-only: the triggers refuse any change to a row, so
    # no code path, bug or hand-typed SQL can rewrite history) and HTTP bearer tokens,
    # kept as SHA-256 digests only.
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        user TEXT NOT NULL DEFAULT '',
        calling_aet TEXT NOT NULL DEFAULT '',
        node_id TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '',
        patient_id TEXT NOT NULL DEFAULT '',
        study_uid TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_at ON audit(at);
    CREATE INDEX audit_study ON audit(study_uid);
    CREATE INDEX audit_patient ON audit(patient_id);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
    CREATE TABLE http_tokens (
        id TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
AUDIT_COLUMNS = ("at", "action", "outcome", "user", "calling_aet", "node_id", "address",
                 "patient_id", "study_uid", "detail")
TOMBSTONED_ERROR = "study deleted (tombstone)"  # raised by the v6 trigger


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration; a trigger's body holds semicolons of its own."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


class AddOutcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes
    CONFLICT = "conflict"  # same SOP Instance UID, different bytes: first copy kept
    TOMBSTONED = "tombstoned"  # its study was deleted mesh-wide: nothing recorded


@dataclass(frozen=True)
class Tombstoned:
    """A deleted study as this node recorded it; ``document`` is the signed original."""

    study_uid: str
    sig: str
    deleted_by: str
    deleted_at: float
    reason: str
    document: dict[str, Any]


@dataclass(frozen=True)
class StudyDeletion:
    instances: int
    bytes: int
    # Files to remove: the instances' objects, and conflicting copies kept aside.
    objects: tuple[str, ...]
    conflict_copies: tuple[str, ...]


@dataclass(frozen=True)
class StoredInstance:
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    sha256: str
    size: int
    study_uid: str = ""
    series_uid: str = ""
    local: bool = True  # False: only other members hold it (see Index.instances_for)


@dataclass(frozen=True)
class Counts:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)


# Copies of a deleted study are never queued, whatever raced the deletion.
_QUEUE_COPY = (
    "INSERT OR IGNORE INTO outbox (sop_uid, target, study_uid, sha256) SELECT ?,?,?,?"
    " WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE study_uid = ?)"
)


def _queue_rows(rows: list[tuple[str, str, str, str]]) -> list[tuple[str, ...]]:
    return [(*row, row[2]) for row in rows]


class Index:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Index:
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        index = cls(conn)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            await conn.create_function("tm_norm", 1, tm_norm, deterministic=True)
            await conn.create_function("pn_match", 2, pn_match, deterministic=True)
            await index._migrate()
        except BaseException:
            # aiosqlite's worker thread would otherwise keep the process alive.
            await conn.close()
            raise
        return index

    async def close(self) -> None:
        await self._conn.close()

    async def schema_version(self) -> int:
        async with self._conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        current = await self.schema_version()
        if current > SCHEMA_VERSION:
            raise IndexFailure(
                f"index schema version {current} is newer than this PACSmesh ({SCHEMA_VERSION});"
                " upgrade PACSmesh"
            )
        for version in range(current, SCHEMA_VERSION):
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(MIGRATIONS[version]):
                    await self._conn.execute(statement)
                await self._conn.execute(f"PRAGMA user_version = {version + 1}")
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise

    # --- writes -------------------------------------------------------------------------

    async def lookup_sha(self, sop_uid: str) -> str | None:
        rows = await self._conn.execute_fetchall(
            "SELECT sha256 FROM instances WHERE sop_uid = ?", (sop_uid,)
        )
        return str(next(iter(rows))[0]) if rows else None

    async def add_instance(
        self, keys: InstanceKeys, sha256: str, size: int, source_aet: str = ""
    ) -> tuple[AddOutcome, str]:
        """Record one stored object; return the outcome and the sha256 now on record."""
        k = keys
        async with self._write_lock:
            try:
                # One statement, so one implicit transaction: all four rows or none. A
                # new instance, the usual case, costs this single round trip. Under the
                # write lock, like deletions: a store racing a tombstone lands entirely
                # before it (and is deleted) or after it (and is refused by the trigger).
                await self._conn.execute(
                    "INSERT INTO ingest VALUES"
                    " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (k.study_instance_uid, k.patient_id, k.patient_name,
                     k.patient_birth_date, k.patient_sex, k.study_date, k.study_time,
                     k.accession_number, k.study_id, k.study_description,
                     k.referring_physician_name,
                     k.series_instance_uid, k.modality, k.series_number,
                     k.series_description, k.series_date, k.series_time,
                     k.body_part_examined,
                     k.sop_instance_uid, k.sop_class_uid, k.transfer_syntax_uid,
                     k.instance_number, k.rows, k.columns, k.number_of_frames,
                     sha256, size, source_aet, time.time()),
                )
            except sqlite3.IntegrityError as exc:
                if TOMBSTONED_ERROR in str(exc):
                    return AddOutcome.TOMBSTONED, ""
                existing = await self.lookup_sha(k.sop_instance_uid)
                if existing is None:
                    raise IndexFailure(str(exc)) from exc
                same = existing == sha256
                return (AddOutcome.DUPLICATE if same else AddOutcome.CONFLICT), existing
            except sqlite3.Error as exc:
                if _is_full(exc):
                    raise IndexFull(str(exc)) from exc
                raise IndexFailure(str(exc)) from exc
        return AddOutcome.STORED, sha256

    async def record_conflict(
        self, sop_uid: str, stored_sha: str, received_sha: str, size: int, kept: bool,
        source_aet: str,
    ) -> None:
        try:
            async with self._write_lock:  # never inside another writer's transaction
                await self._conn.execute(
                    "INSERT INTO conflicts (sop_uid, stored_sha256, received_sha256,"
                    " received_size, kept_copy, source_aet, at) VALUES (?,?,?,?,?,?,?)",
                    (sop_uid, stored_sha, received_sha, size, int(kept), source_aet,
                     time.time()),
                )
        except sqlite3.Error as exc:
            if _is_full(exc):
                raise IndexFull(str(exc)) from exc
            raise IndexFailure(str(exc)) from exc

    async def remove_instances(self, sop_uids: Iterable[str]) -> int:
        """Drop index rows (used only by reconciliation for files that are gone)."""
        removed = 0
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                for sop_uid in sop_uids:
                    cur = await self._conn.execute(
                        "DELETE FROM instances WHERE sop_uid = ?", (sop_uid,)
                    )
                    removed += cur.rowcount
                    await cur.close()
                await self._conn.execute(
                    "DELETE FROM series WHERE series_uid NOT IN"
                    " (SELECT DISTINCT series_uid FROM instances)"
                )
                await self._conn.execute(
                    "DELETE FROM studies WHERE study_uid NOT IN"
                    " (SELECT DISTINCT study_uid FROM series)"
                )
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
        return removed

    # --- reads --------------------------------------------------------------------------

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        rows = await self._conn.execute_fetchall(sql, tuple(params))
        return [dict(r) for r in rows]

    async def find(self, query: Query, mesh: bool = False) -> list[dict[str, Any]]:
        """C-FIND rows from this node's holdings, or (``mesh``) from everything the mesh
        holds as far as the catalog knows, each entity once."""
        sql, params = query.sql()
        return await self._fetchall(_over_mesh(sql) if mesh else sql, params)

    async def instances_for(self, query: Query, mesh: bool = False) -> list[StoredInstance]:
        """The instances under every entity the query matches, in a stable order; with
        ``mesh``, those held elsewhere too (``local`` False)."""
        image_query = Query(level="IMAGE", conditions=query.conditions)
        columns = ["i.sop_class_uid", "i.transfer_syntax_uid", "i.sha256", "i.size",
                   "se.study_uid", "se.series_uid"]
        sql, params = image_query.sql(columns=[*columns, "i.local"] if mesh else columns)
        rows = await self._fetchall(_over_mesh(sql) if mesh else sql, params)
        return [
            StoredInstance(
                sop_uid=r["SOPInstanceUID"], sop_class_uid=r["i.sop_class_uid"],
                transfer_syntax_uid=r["i.transfer_syntax_uid"], sha256=r["i.sha256"],
                size=r["i.size"], study_uid=r["se.study_uid"], series_uid=r["se.series_uid"],
                local=bool(r.get("i.local", 1)),
            )
            for r in rows
        ]

    async def sops_with_sha(self, sha256: str) -> list[str]:
        rows = await self._fetchall("SELECT sop_uid FROM instances WHERE sha256 = ?", (sha256,))
        return [r["sop_uid"] for r in rows]

    async def all_shas(self) -> dict[str, str]:
        """sha256 -> SOP Instance UID of every indexed instance."""
        rows = await self._fetchall("SELECT sha256, sop_uid FROM instances")
        return {r["sha256"]: r["sop_uid"] for r in rows}

    async def counts(self) -> Counts:
        rows = await self._fetchall(
            "SELECT (SELECT COUNT(DISTINCT patient_id) FROM studies) AS patients,"
            " (SELECT COUNT(*) FROM studies) AS studies,"
            " (SELECT COUNT(*) FROM series) AS series,"
            " (SELECT COUNT(*) FROM instances) AS instances,"
            " (SELECT COALESCE(SUM(size), 0) FROM instances) AS bytes"
        )
        return Counts(**rows[0])

    async def studies(self) -> list[dict[str, Any]]:
        return await self._fetchall(
            "SELECT st.study_uid, st.patient_id, st.patient_name, st.study_date, st.study_time,"
            " st.accession_number, st.study_description,"
            " (SELECT group_concat(m, '\\') FROM (SELECT DISTINCT x.modality AS m FROM series x"
            "   WHERE x.study_uid = st.study_uid AND x.modality != '' ORDER BY x.modality))"
            "   AS modalities,"
            " (SELECT COUNT(*) FROM series x WHERE x.study_uid = st.study_uid) AS series_count,"
            " (SELECT COUNT(*) FROM instances y JOIN series x ON y.series_uid = x.series_uid"
            "   WHERE x.study_uid = st.study_uid) AS instance_count,"
            " (SELECT COALESCE(SUM(y.size), 0) FROM instances y JOIN series x"
            "   ON y.series_uid = x.series_uid WHERE x.study_uid = st.study_uid) AS bytes"
            " FROM studies st ORDER BY st.study_date DESC, st.study_uid"
        )

    async def changes_since(self, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        """The change feed: what this node stored (``add``) or dropped from its cache
        (``remove``) after ``seq``, oldest first, with the keys a catalog of the mesh
        answers C-FIND from. No pixel data, nothing a catalog cannot show."""
        return await self._fetchall(
            "SELECT c.seq, c.kind, c.sop_uid, c.study_uid, c.at, i.sha256, i.size, i.source_aet,"
            " i.sop_class_uid, i.transfer_syntax_uid, i.series_uid, i.instance_number,"
            " i.rows, i.columns, i.number_of_frames,"
            " st.patient_id, st.patient_name, st.patient_birth_date, st.patient_sex,"
            " st.study_date, st.study_time, st.accession_number, st.study_id,"
            " st.study_description, st.referring_physician_name,"
            " se.modality, se.series_number, se.series_description, se.series_date,"
            " se.series_time, se.body_part_examined"
            " FROM changes c LEFT JOIN instances i ON i.sop_uid = c.sop_uid AND i.seq = c.seq"
            " LEFT JOIN series se ON se.series_uid = i.series_uid"
            " LEFT JOIN studies st ON st.study_uid = c.study_uid"
            " WHERE c.seq > ? ORDER BY c.seq LIMIT ?",
            (seq, limit),
        )

    # --- outbox (replication) ------------------------------------------------------------

    async def enqueue(
        self, rows: list[tuple[str, str, str, str]], checkpoint: tuple[str, str, Any]
    ) -> None:
        """Add (sop_uid, target, study_uid, sha256) rows and move a feed checkpoint in the
        same transaction, so a crash can neither lose nor repeat an enqueue."""
        namespace, key, value = checkpoint
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                await self._conn.executemany(_QUEUE_COPY, _queue_rows(rows))
                await self._conn.execute(
                    "INSERT INTO state (namespace, key, value, updated_at) VALUES (?,?,?,?)"
                    " ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (namespace, key, json.dumps(value), time.time()),
                )
                await self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    await self._conn.execute("ROLLBACK")
                raise

    async def due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        return await self._fetchall(
            "SELECT * FROM outbox WHERE next_try <= ? ORDER BY next_try, sop_uid LIMIT ?",
            (now, limit),
        )

    async def due_to(self, target: str, now: float, limit: int) -> list[dict[str, Any]]:
        """Due rows for one target, oldest first: each target is read on its own, so rows
        owed to a member that cannot take them never crowd out another's."""
        return await self._fetchall(
            "SELECT * FROM outbox WHERE target = ? AND next_try <= ?"
            " ORDER BY next_try, sop_uid LIMIT ?", (target, now, limit),
        )

    async def sources(self, sop_uids: list[str]) -> dict[str, str]:
        """sop_uid -> where the instance held here came from (its ``source_aet``)."""
        found: dict[str, str] = {}
        for start in range(0, len(sop_uids), 500):  # SQLite's limit on parameters
            part = sop_uids[start:start + 500]
            rows = await self._fetchall(
                f"SELECT sop_uid, source_aet FROM instances"
                f" WHERE sop_uid IN ({', '.join('?' * len(part))})", part,
            )
            found.update((r["sop_uid"], r["source_aet"]) for r in rows)
        return found

    async def delivered(self, sop_uid: str, target: str) -> None:
        async with self._write_lock:
            await self._conn.execute(
                "DELETE FROM outbox WHERE sop_uid = ? AND target = ?", (sop_uid, target)
            )

    async def drop_rows_not_to(self, members: list[str]) -> int:
        """Delete the rows (owed, hinted or parked) whose target is none of ``members``:
        copies owed to a revoked member, which no send can ever clear."""
        marks = ",".join("?" * len(members))
        async with self._write_lock:
            cur = await self._conn.execute(
                f"DELETE FROM outbox WHERE target NOT IN ({marks})", members)
            return cur.rowcount

    async def postpone(self, sop_uid: str, target: str, next_try: float, error: str) -> None:
        async with self._write_lock:
            await self._conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_try = ?, last_error = ?"
                " WHERE sop_uid = ? AND target = ?", (next_try, error[:200], sop_uid, target),
            )

    async def holdings(self) -> list[tuple[str, str, str]]:
        """(study_uid, sop_uid, sha256) of every instance held here."""
        rows = await self._fetchall(
            "SELECT se.study_uid, i.sop_uid, i.sha256 FROM instances i"
            " JOIN series se ON se.series_uid = i.series_uid"
        )
        return [(r["study_uid"], r["sop_uid"], r["sha256"]) for r in rows]

    async def record_catalog_changes(
        self, node_id: str, changes: list[dict[str, Any]], checkpoint: int
    ) -> None:
        """Apply a page of ``node_id``'s change feed to the catalog (what it holds, with
        the keys C-FIND answers from) and remember how far the feed was read, in one
        transaction."""
        adds = [_catalog_row(node_id, c) for c in changes if c["kind"] == "add" and c["sha256"]]
        removes = [(node_id, c["sop_uid"]) for c in changes if c["kind"] == "remove"]
        keyed = [c for c in changes if c["kind"] == "add" and c.get("series_uid")]
        # One row per study and per series (INSERT OR IGNORE keeps the first one seen),
        # not one per instance of a page.
        studies = list({c["study_uid"]: c for c in reversed(keyed)}.values())
        series = list({c["series_uid"]: c for c in reversed(keyed)}.values())
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                # A peer that has not yet applied a tombstone still lists the study.
                await self._conn.executemany(
                    "INSERT INTO catalog (study_uid, node_id, sop_uid, sha256, series_uid,"
                    " sop_class_uid, transfer_syntax_uid, instance_number, rows, columns,"
                    " number_of_frames, size) SELECT ?,?,?,?,?,?,?,?,?,?,?,? WHERE NOT EXISTS"
                    " (SELECT 1 FROM tombstones WHERE study_uid = ?)"
                    " ON CONFLICT (study_uid, node_id, sop_uid) DO UPDATE SET"
                    " sha256 = excluded.sha256, series_uid = excluded.series_uid,"
                    " sop_class_uid = excluded.sop_class_uid,"
                    " transfer_syntax_uid = excluded.transfer_syntax_uid,"
                    " instance_number = excluded.instance_number, rows = excluded.rows,"
                    " columns = excluded.columns,"
                    " number_of_frames = excluded.number_of_frames, size = excluded.size",
                    [(*row, row[0]) for row in adds],
                )
                await self._conn.executemany(
                    "DELETE FROM catalog WHERE node_id = ? AND sop_uid = ?", removes
                )
                await self._conn.executemany(
                    f"INSERT OR IGNORE INTO catalog_studies ({', '.join(_STUDY_KEYS)})"
                    f" VALUES ({', '.join('?' * len(_STUDY_KEYS))})",
                    [tuple(_text(c, k) for k in _STUDY_KEYS) for c in studies],
                )
                await self._conn.executemany(
                    f"INSERT OR IGNORE INTO catalog_series ({', '.join(_SERIES_KEYS)})"
                    f" VALUES ({', '.join('?' * len(_SERIES_KEYS))})",
                    [tuple(_text(c, k) for k in _SERIES_KEYS) for c in series],
                )
                await self._conn.execute(
                    "INSERT INTO state (namespace, key, value, updated_at) VALUES (?,?,?,?)"
                    " ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    ("catalog", node_id, json.dumps(checkpoint), time.time()),
                )
                await self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    await self._conn.execute("ROLLBACK")
                raise

    async def holders_of(self, sop_uids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """sop_uid -> [(member node id, sha256)] of the members the catalog says hold it."""
        held: dict[str, list[tuple[str, str]]] = {}
        for start in range(0, len(sop_uids), 500):  # SQLite's limit on parameters
            part = sop_uids[start:start + 500]
            rows = await self._fetchall(
                f"SELECT sop_uid, node_id, sha256 FROM catalog"
                f" WHERE sop_uid IN ({', '.join('?' * len(part))}) ORDER BY node_id", part,
            )
            for r in rows:
                held.setdefault(r["sop_uid"], []).append((r["node_id"], r["sha256"]))
        return held

    # --- cache of instances fetched from the mesh ------------------------------------------

    async def cache_add(self, inst: StoredInstance, now: float) -> None:
        async with self._write_lock:
            await self._conn.execute(
                "INSERT INTO cache_use (sop_uid, sha256, study_uid, size, last_used)"
                " VALUES (?,?,?,?,?) ON CONFLICT(sop_uid) DO UPDATE SET"
                " last_used = excluded.last_used",
                (inst.sop_uid, inst.sha256, inst.study_uid, inst.size, now),
            )

    async def cache_touch(self, sop_uids: list[str], now: float) -> int:
        """Mark cached instances among ``sop_uids`` used; return how many were cached."""
        async with self._write_lock:
            cur = await self._conn.executemany(
                "UPDATE cache_use SET last_used = ? WHERE sop_uid = ?",
                [(now, sop) for sop in sop_uids],
            )
            return int(cur.rowcount)

    async def cache_bytes(self) -> int:
        rows = await self._conn.execute_fetchall("SELECT COALESCE(SUM(size), 0) FROM cache_use")
        return int(next(iter(rows))[0])

    async def cache_entries(self) -> list[dict[str, Any]]:
        return await self._fetchall(
            "SELECT sop_uid, sha256, study_uid, size, last_used FROM cache_use"
        )

    async def evict(self, sop_uids: list[str], now: float) -> list[str]:
        """Drop cached instances from the index (the caller removes the files it gets
        back), and record each removal in the change feed so catalogs forget this copy."""
        gone: list[str] = []
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                for sop in sop_uids:
                    rows = await self._fetchall(
                        "SELECT c.sha256, c.study_uid FROM cache_use c JOIN instances i"
                        " ON i.sop_uid = c.sop_uid WHERE c.sop_uid = ?", (sop,),
                    )
                    await self._conn.execute("DELETE FROM cache_use WHERE sop_uid = ?", (sop,))
                    if not rows:
                        continue
                    await self._conn.execute("DELETE FROM instances WHERE sop_uid = ?", (sop,))
                    await self._conn.execute(
                        "INSERT INTO changes (kind, sop_uid, study_uid, at)"
                        " VALUES ('remove', ?, ?, ?)", (sop, rows[0]["study_uid"], now),
                    )
                    gone.append(rows[0]["sha256"])
                await self._conn.execute(
                    "DELETE FROM series WHERE series_uid NOT IN"
                    " (SELECT DISTINCT series_uid FROM instances)"
                )
                await self._conn.execute(
                    "DELETE FROM studies WHERE study_uid NOT IN"
                    " (SELECT DISTINCT study_uid FROM series)"
                )
                await self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    await self._conn.execute("ROLLBACK")
                raise
        return gone

    async def catalog_holds(self, node_id: str, sop_uids: list[str]) -> dict[str, str]:
        """sop_uid -> sha256 of those instances the catalog says ``node_id`` holds."""
        held: dict[str, str] = {}
        for start in range(0, len(sop_uids), 500):  # SQLite's limit on parameters
            part = sop_uids[start:start + 500]
            rows = await self._fetchall(
                f"SELECT sop_uid, sha256 FROM catalog WHERE node_id = ?"
                f" AND sop_uid IN ({', '.join('?' * len(part))})", [node_id, *part],
            )
            held.update((r["sop_uid"], r["sha256"]) for r in rows)
        return held

    async def study_holders(self, study_uid: str) -> dict[str, int]:
        """Member node id -> instances of the study it holds, as far as we know."""
        rows = await self._fetchall(
            "SELECT node_id, COUNT(*) AS n FROM catalog WHERE study_uid = ? GROUP BY node_id",
            (study_uid,),
        )
        return {r["node_id"]: int(r["n"]) for r in rows}

    async def study_instance_count(self, study_uid: str) -> int:
        rows = await self._fetchall(
            "SELECT COUNT(*) AS n FROM instances i JOIN series se"
            " ON i.series_uid = se.series_uid WHERE se.study_uid = ?", (study_uid,),
        )
        return int(rows[0]["n"])

    async def owed_to(self, targets: list[str]) -> list[dict[str, Any]]:
        marks = ", ".join("?" * len(targets))
        return await self._fetchall(
            f"SELECT sop_uid, target, study_uid, sha256 FROM outbox WHERE target IN ({marks})",
            targets,
        )

    async def add_to_outbox(self, rows: list[tuple[str, str, str, str]]) -> int:
        """Queue (sop_uid, target, study_uid, sha256) copies; rows already queued stay."""
        async with self._write_lock:
            before = self._conn.total_changes
            await self._conn.executemany(_QUEUE_COPY, _queue_rows(rows))
            return self._conn.total_changes - before

    async def transfer_syntax(self, sop_uid: str) -> str | None:
        rows = await self._fetchall(
            "SELECT transfer_syntax_uid FROM instances WHERE sop_uid = ?", (sop_uid,)
        )
        return str(rows[0]["transfer_syntax_uid"]) if rows else None

    async def outbox_summary(self) -> tuple[int, int]:
        """(rows waiting, studies with a copy still owed to an owner)."""
        rows = await self._fetchall(
            "SELECT COUNT(*) AS depth, COUNT(DISTINCT study_uid) AS studies FROM outbox"
        )
        return int(rows[0]["depth"]), int(rows[0]["studies"])

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
        return await self._fetchall(sql, params)

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
        return await self._fetchall(
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

    async def outbox_by_target(self) -> dict[str, tuple[int, int]]:
        """Target node id -> (copies waiting, their bytes) for every target owed a copy."""
        rows = await self._fetchall(
            "SELECT o.target, COUNT(*) AS depth, COALESCE(SUM(i.size), 0) AS bytes"
            " FROM outbox o LEFT JOIN instances i ON i.sop_uid = o.sop_uid GROUP BY o.target"
        )
        return {r["target"]: (int(r["depth"]), int(r["bytes"])) for r in rows}

    async def load_state(self, namespace: str) -> dict[str, Any]:
        rows = await self._fetchall(
            "SELECT key, value FROM state WHERE namespace = ?", (namespace,)
        )
        return {r["key"]: json.loads(r["value"]) for r in rows}

    async def save_state(self, namespace: str, key: str, value: Any) -> None:
        try:
            async with self._write_lock:  # never inside another writer's transaction
                await self._conn.execute(
                    "INSERT INTO state (namespace, key, value, updated_at) VALUES (?,?,?,?)"
                    " ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (namespace, key, json.dumps(value), time.time()),
                )
        except sqlite3.Error as exc:
            if _is_full(exc):
                raise IndexFull(str(exc)) from exc
            raise IndexFailure(str(exc)) from exc

    # --- audit trail and HTTP tokens ---------------------------------------------------------

    async def append_audit(self, rows: list[tuple[Any, ...]]) -> None:
        """Append audit rows (columns as in :data:`node.audit.COLUMNS`) in one statement."""
        columns = ", ".join(AUDIT_COLUMNS)
        marks = ",".join("?" * len(AUDIT_COLUMNS))
        try:
            async with self._write_lock:
                await self._conn.executemany(
                    f"INSERT INTO audit ({columns}) VALUES ({marks})", rows)
        except sqlite3.Error as exc:
            if _is_full(exc):
                raise IndexFull(str(exc)) from exc
            raise IndexFailure(str(exc)) from exc

    async def add_token(self, token_id: str, digest: str, role: str, name: str) -> None:
        async with self._write_lock:
            await self._conn.execute(
                "INSERT INTO http_tokens (id, sha256, role, name, created_at) VALUES (?,?,?,?,?)",
                (token_id, digest, role, name, time.time()))

    async def revoke_token(self, token_id: str, digest: str) -> bool:
        """Revoke the token with this id or digest; False if no live token matched."""
        async with self._write_lock:
            cur = await self._conn.execute(
                "UPDATE http_tokens SET revoked_at = ? WHERE (id = ? OR sha256 = ?)"
                " AND revoked_at IS NULL", (time.time(), token_id, digest))
        return cur.rowcount > 0

    async def tokens(self) -> list[dict[str, Any]]:
        return await self._fetchall(
            "SELECT id, role, name, created_at, revoked_at FROM http_tokens ORDER BY created_at")

    async def token_role(self, digest: str) -> tuple[str, str] | None:
        """(role, name) of the live token with this digest."""
        rows = await self._fetchall(
            "SELECT role, name FROM http_tokens WHERE sha256 = ? AND revoked_at IS NULL",
            (digest,))
        return (rows[0]["role"], rows[0]["name"]) if rows else None

    async def audit_rows(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` audit rows, oldest first."""
        rows = await self._fetchall(
            f"SELECT id, {', '.join(AUDIT_COLUMNS)} FROM audit ORDER BY id DESC LIMIT ?",
            (max(1, min(limit, 100000)),))
        return rows[::-1]

    async def has_tokens(self) -> bool:
        return bool(await self._fetchall("SELECT 1 FROM http_tokens LIMIT 1"))

    # --- tombstones (studies deleted mesh-wide) --------------------------------------------

    async def tombstone(self, study_uid: str) -> Tombstoned | None:
        rows = await self._fetchall(
            "SELECT * FROM tombstones WHERE study_uid = ?", (study_uid,)
        )
        return _tombstoned(rows[0]) if rows else None

    async def tombstones(self) -> list[dict[str, Any]]:
        """Every tombstone with this node's audit of it, newest first."""
        rows = await self._fetchall("SELECT * FROM tombstones ORDER BY deleted_at DESC")
        for row in rows:
            row["document"] = json.loads(row["document"])
        return rows

    async def tombstone_sigs(self) -> list[str]:
        """The signatures of the tombstones held here: all a gossip digest needs."""
        rows = await self._conn.execute_fetchall("SELECT sig FROM tombstones")
        return [str(r[0]) for r in rows]

    async def delete_study(
        self, stone: Tombstoned, received_from: str, now: float
    ) -> StudyDeletion:
        """Record the study's tombstone and drop everything indexed about it (instances,
        queued copies, catalog entries, conflict records), in one transaction. The
        caller removes the files it returns; a crash before that leaves files that
        reconciliation finds tombstoned and removes."""
        c = self._conn
        study = (stone.study_uid,)
        async with self._write_lock:
            await c.execute("BEGIN IMMEDIATE")
            try:
                held = await self._fetchall(
                    "SELECT i.sop_uid, i.sha256, i.size FROM instances i JOIN series se"
                    " ON i.series_uid = se.series_uid WHERE se.study_uid = ?", study,
                )
                sops = [(r["sop_uid"],) for r in held]
                copies = await self._fetchall(
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
                await c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    await c.execute("ROLLBACK")
                raise
        return deletion

    async def replace_tombstone(self, stone: Tombstoned) -> None:
        """Keep another signed tombstone for an already deleted study (see
        ``replication.tombstone.supersedes``); this node's audit of it stays."""
        async with self._write_lock:
            await self._conn.execute(
                "UPDATE tombstones SET sig = ?, deleted_by = ?, deleted_at = ?, reason = ?,"
                " document = ? WHERE study_uid = ?",
                (stone.sig, stone.deleted_by, stone.deleted_at, stone.reason,
                 json.dumps(stone.document), stone.study_uid),
            )


# The match SQL of node.query reads tables studies, series and instances; over the mesh
# the same statement reads the mesh_* views instead, so there is one matcher.
_MESH_TABLES = (
    "WITH studies AS (SELECT * FROM mesh_studies), series AS (SELECT * FROM mesh_series),"
    " instances AS (SELECT * FROM mesh_instances) "
)
_STUDY_KEYS = ("study_uid", "patient_id", "patient_name", "patient_birth_date",
               "patient_sex", "study_date", "study_time", "accession_number", "study_id",
               "study_description", "referring_physician_name")
_SERIES_KEYS = ("series_uid", "study_uid", "modality", "series_number",
                "series_description", "series_date", "series_time", "body_part_examined")


def _over_mesh(sql: str) -> str:
    return _MESH_TABLES + sql


def _text(change: dict[str, Any], key: str) -> str:
    value = change.get(key)
    return "" if value is None else str(value)


def _catalog_row(node_id: str, c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["study_uid"], node_id, c["sop_uid"], c["sha256"], _text(c, "series_uid"),
            _text(c, "sop_class_uid"), _text(c, "transfer_syntax_uid"),
            _text(c, "instance_number"), c.get("rows"), c.get("columns"),
            _text(c, "number_of_frames"), int(c.get("size") or 0))


def _tombstoned(row: dict[str, Any]) -> Tombstoned:
    return Tombstoned(row["study_uid"], row["sig"], row["deleted_by"], row["deleted_at"],
                      row["reason"], json.loads(row["document"]))
