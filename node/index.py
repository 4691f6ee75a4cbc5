"""Node's stores in the SQLite index: instances, small state documents, HTTP tokens, audit.

Every method is a coroutine that must run on the loop that opened the index; other
threads hand work to it with ``asyncio.run_coroutine_threadsafe``. The connection, its
lock, transactions and error translation are :mod:`node.db`'s; the schema is
:mod:`node.migrations`'. What replication keeps in the same file (outbox, catalog,
tombstones, cache) is read and written by ``replication/*_store.py``; node reaches the
catalog only through the :class:`MeshView` seam the composition root fills in.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydicom.dataset import Dataset

from node.db import Database, IndexFailure, IndexFull, SqlFunction
from node.dicom_header import InstanceKeys
from node.migrations import MIGRATIONS, SCHEMA_VERSION
from node.query import LOCAL_TABLES, Query, Tables, pn_key, pn_match, presented, tm_norm

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "AddOutcome", "Counts", "Index", "IndexFailure",
           "IndexFull", "MeshView", "StoredInstance"]

AUDIT_COLUMNS = ("at", "action", "outcome", "user", "calling_aet", "node_id", "address",
                 "patient_id", "study_uid", "detail")
TOMBSTONED_ERROR = "study deleted (tombstone)"  # raised by the v6 trigger
# Shared with replication's stores, whose checkpoints move in their own transactions.
# Series and studies left without instances once some are removed, in the same
# transaction (reconciliation here, cache eviction in replication/cache_store.py).
PRUNE_EMPTY = (
    "DELETE FROM series WHERE series_uid NOT IN (SELECT DISTINCT series_uid FROM instances)",
    "DELETE FROM studies WHERE study_uid NOT IN (SELECT DISTINCT study_uid FROM series)",
)
UPSERT_STATE = (
    "INSERT INTO state (namespace, key, value, updated_at) VALUES (?,?,?,?)"
    " ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value,"
    " updated_at = excluded.updated_at"
)
_SQL_FUNCTIONS: tuple[SqlFunction, ...] = (
    ("tm_norm", 1, tm_norm), ("pn_match", 2, pn_match), ("pn_key", 1, pn_key))


class AddOutcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes
    CONFLICT = "conflict"  # same SOP Instance UID, different bytes: first copy kept
    TOMBSTONED = "tombstoned"  # its study was deleted mesh-wide: nothing recorded


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
    # The Patient ID it is stored under, when patient events exist (node.patients).
    patient_id: str = ""


@dataclass(frozen=True)
class Counts:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


class MeshView(Protocol):
    """Names what the match statement reads instead of tables studies, series and
    instances to cover everything the mesh holds (replication.catalog_store), so C-FIND
    has one matcher; rows held elsewhere carry ``local`` 0."""

    @property
    def tables(self) -> Tables: ...


class PatientView(Protocol):
    """The current patient identity, as node.patients keeps it."""

    @property
    def touched(self) -> bool: ...

    def presents(self, stored_patient_id: str) -> bool: ...

    def coerce(self, ds: Dataset) -> bool: ...

    async def current(self) -> None:
        """Return once events due from other members are here (bounded)."""


class _NoPatientEvents:
    touched = False

    async def current(self) -> None:
        return None

    def presents(self, stored_patient_id: str) -> bool:
        return False

    def coerce(self, ds: Dataset) -> bool:
        return False


NO_PATIENT_EVENTS: PatientView = _NoPatientEvents()


class Index:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Set by the composition root when the node is in a mesh; None: local holdings
        # only, whatever a query asks.
        self.mesh_view: MeshView | None = None
        # Set by the composition root (node.patients.store): once a patient event exists,
        # queries present each stored Patient ID as its current identity
        # (node.query.presented), and data sets leaving the node are coerced to it.
        self.patients: PatientView = NO_PATIENT_EVENTS

    @classmethod
    async def open(cls, path: Path) -> Index:
        return cls(await Database.open(path, _SQL_FUNCTIONS))

    async def close(self) -> None:
        await self.db.close()

    async def schema_version(self) -> int:
        return await self.db.schema_version()

    # --- instances ----------------------------------------------------------------------

    async def lookup_sha(self, sop_uid: str) -> str | None:
        rows = await self.db.conn.execute_fetchall(
            "SELECT sha256 FROM instances WHERE sop_uid = ?", (sop_uid,)
        )
        return str(next(iter(rows))[0]) if rows else None

    async def add_instance(
        self, keys: InstanceKeys, sha256: str, size: int, source_aet: str = ""
    ) -> tuple[AddOutcome, str]:
        """Record one stored object; return the outcome and the sha256 now on record."""
        k = keys
        async with self.db.write() as conn:
            try:
                # One statement, so one implicit transaction: all four rows or none. A
                # new instance, the usual case, costs this single round trip. Under the
                # write lock, like deletions: a store racing a tombstone lands entirely
                # before it (and is deleted) or after it (and is refused by the trigger).
                await conn.execute(
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
        return AddOutcome.STORED, sha256

    async def record_conflict(
        self, sop_uid: str, stored_sha: str, received_sha: str, size: int, kept: bool,
        source_aet: str,
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO conflicts (sop_uid, stored_sha256, received_sha256,"
                " received_size, kept_copy, source_aet, at) VALUES (?,?,?,?,?,?,?)",
                (sop_uid, stored_sha, received_sha, size, int(kept), source_aet,
                 time.time()),
            )

    async def remove_instances(self, sop_uids: Iterable[str]) -> int:
        """Drop index rows (used only by reconciliation for files that are gone)."""
        removed = 0
        async with self.db.transaction() as conn:
            for sop_uid in sop_uids:
                cur = await conn.execute("DELETE FROM instances WHERE sop_uid = ?", (sop_uid,))
                removed += cur.rowcount
                await cur.close()
            for statement in PRUNE_EMPTY:
                await conn.execute(statement)
        self.db.removals += 1  # committed: what reads holdings reads them again
        return removed

    # --- reads --------------------------------------------------------------------------

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return await self.db.fetchall(sql, params)

    async def find(self, query: Query, mesh: bool = False) -> list[dict[str, Any]]:
        """C-FIND rows from this node's holdings, or (``mesh``) from everything the mesh
        holds as far as the catalog knows, each entity once."""
        await self.patients.current()
        sql, params = query.sql(tables=self._tables(mesh))
        return await self._fetchall(sql, params)

    async def instances_for(self, query: Query, mesh: bool = False) -> list[StoredInstance]:
        """The instances under every entity the query matches, in a stable order; with
        ``mesh``, those held elsewhere too (``local`` False)."""
        mesh = mesh and self.mesh_view is not None
        await self.patients.current()
        image_query = Query(level="IMAGE", conditions=query.conditions)
        columns = ["i.sop_class_uid", "i.transfer_syntax_uid", "i.sha256", "i.size",
                   "se.study_uid", "se.series_uid"]
        if mesh:
            columns.append("i.local")
        if self.patients.touched:
            columns.append("st.stored_patient_id")
        sql, params = image_query.sql(columns=columns, tables=self._tables(mesh))
        rows = await self._fetchall(sql, params)
        return [
            StoredInstance(
                sop_uid=r["SOPInstanceUID"], sop_class_uid=r["i.sop_class_uid"],
                transfer_syntax_uid=r["i.transfer_syntax_uid"], sha256=r["i.sha256"],
                size=r["i.size"], study_uid=r["se.study_uid"], series_uid=r["se.series_uid"],
                local=bool(r.get("i.local", 1)), patient_id=r.get("st.stored_patient_id") or "",
            )
            for r in rows
        ]

    def stored_tables(self, mesh: bool = True) -> Tables:
        """What the index holds as stored, no identity presented."""
        return self.mesh_view.tables if mesh and self.mesh_view is not None else LOCAL_TABLES

    def _tables(self, mesh: bool) -> Tables:
        tables = self.stored_tables(mesh)
        return presented(tables) if self.patients.touched else tables

    async def sops_with_sha(self, sha256: str) -> list[str]:
        rows = await self._fetchall("SELECT sop_uid FROM instances WHERE sha256 = ?", (sha256,))
        return [r["sop_uid"] for r in rows]

    async def all_shas(self) -> dict[str, str]:
        """sha256 -> SOP Instance UID of every indexed instance."""
        rows = await self._fetchall("SELECT sha256, sop_uid FROM instances")
        return {r["sha256"]: r["sop_uid"] for r in rows}

    async def indexed_shas(self, sha256s: Iterable[str]) -> set[str]:
        """Which of ``sha256s`` some instance row references."""
        return await self._which("SELECT sha256 AS v FROM instances WHERE sha256", sha256s)

    async def kept_conflict_copies(self, sha256s: Iterable[str]) -> set[str]:
        """Which of ``sha256s`` a conflict record still says is kept under conflicts/."""
        return await self._which("SELECT received_sha256 AS v FROM conflicts"
                                 " WHERE kept_copy = 1 AND received_sha256", sha256s)

    async def _which(self, sql: str, values: Iterable[str]) -> set[str]:
        """The ``v`` of ``sql ... IN (values)``, asked 500 at a time (SQLite's limit on
        parameters)."""
        wanted, found = list(values), set[str]()
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            rows = await self._fetchall(f"{sql} IN ({', '.join('?' * len(part))})", part)
            found.update(r["v"] for r in rows)
        return found

    async def sync_durably(self) -> None:
        """Make every commit so far survive a power loss. Commits run with
        ``synchronous=NORMAL`` (node/db.py); this one commit runs with FULL, which
        syncs the write-ahead log, and with it every frame written before."""
        async with self.db.write() as conn:
            await conn.execute("PRAGMA synchronous=FULL")
            try:
                await conn.execute(UPSERT_STATE, ("storage", "synced_at", "0", time.time()))
            finally:
                await conn.execute("PRAGMA synchronous=NORMAL")

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

    async def holdings(self) -> list[tuple[str, str, str]]:
        """(study_uid, sop_uid, sha256) of every instance held here."""
        rows = await self._fetchall(
            "SELECT se.study_uid, i.sop_uid, i.sha256 FROM instances i"
            " JOIN series se ON se.series_uid = i.series_uid"
        )
        return [(r["study_uid"], r["sop_uid"], r["sha256"]) for r in rows]

    async def holdings_since(self, seq: int) -> list[tuple[str, str, str, int]]:
        """(study_uid, sop_uid, sha256, seq) of every instance held here whose change
        sequence is past ``seq`` (0: all of them)."""
        rows = await self.db.conn.execute_fetchall(
            "SELECT se.study_uid, i.sop_uid, i.sha256, i.seq FROM instances i"
            " JOIN series se ON se.series_uid = i.series_uid WHERE i.seq > ?", (seq,))
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def transfer_syntax(self, sop_uid: str) -> str | None:
        rows = await self._fetchall(
            "SELECT transfer_syntax_uid FROM instances WHERE sop_uid = ?", (sop_uid,)
        )
        return str(rows[0]["transfer_syntax_uid"]) if rows else None

    async def study_instance_count(self, study_uid: str) -> int:
        rows = await self._fetchall(
            "SELECT COUNT(*) AS n FROM instances i JOIN series se"
            " ON i.series_uid = se.series_uid WHERE se.study_uid = ?", (study_uid,),
        )
        return int(rows[0]["n"])

    # --- state documents ----------------------------------------------------------------

    async def load_state(self, namespace: str) -> dict[str, Any]:
        rows = await self._fetchall(
            "SELECT key, value FROM state WHERE namespace = ?", (namespace,)
        )
        return {r["key"]: json.loads(r["value"]) for r in rows}

    async def save_state(self, namespace: str, key: str, value: Any) -> None:
        async with self.db.write() as conn:  # never inside another writer's transaction
            await conn.execute(UPSERT_STATE, (namespace, key, json.dumps(value), time.time()))

    # --- audit trail and HTTP tokens ---------------------------------------------------------

    async def append_audit(self, rows: list[tuple[Any, ...]]) -> None:
        """Append audit rows (columns as in :data:`node.audit.COLUMNS`) in one statement."""
        columns = ", ".join(AUDIT_COLUMNS)
        marks = ",".join("?" * len(AUDIT_COLUMNS))
        async with self.db.write() as conn:
            await conn.executemany(f"INSERT INTO audit ({columns}) VALUES ({marks})", rows)

    async def add_token(self, token_id: str, digest: str, role: str, name: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO http_tokens (id, sha256, role, name, created_at) VALUES (?,?,?,?,?)",
                (token_id, digest, role, name, time.time()))

    async def revoke_token(self, token_id: str, digest: str) -> bool:
        """Revoke the token with this id or digest; False if no live token matched."""
        async with self.db.write() as conn:
            cur = await conn.execute(
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
