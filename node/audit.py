"""The audit trail: who did what to which patient and study, from where, when, and how
it ended. Rows are appended to the index's ``audit`` table, which triggers keep
append-only.

Recording never waits for the database: :meth:`AuditTrail.record` may be called from any
thread (pynetdicom handler threads included) and only queues the event on the loop that
owns the index; a task writes whatever has queued in one statement. So the C-STORE path
pays no database round trip for its audit, and a burst of events costs one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import sqlite3
import threading
import time
from dataclasses import astuple, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from node.archive import IngestStatus
from node.index import AUDIT_COLUMNS, Index, IndexFailure

log = logging.getLogger(__name__)
# Events queued this long are written together; short enough for `pacsmesh audit` to
# show what just happened.
FLUSH_INTERVAL = 0.25
RETRY_AFTER = 5.0  # after a failed write (disk full, locked): not a tight error loop


class Action(enum.StrEnum):
    ASSOCIATION = "association"
    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    EXPORT = "export"  # C-MOVE: instances sent to another AE
    LOGIN = "login"  # an HTTP request with its bearer token (or none)
    JOIN = "join"
    REFUSAL = "refusal"
    DELETION = "deletion"
    INTEGRITY = "integrity"  # a stored object failed its check and was set aside
    PROCEDURE_STEP = "procedure-step"  # MPPS: a modality created or set a step
    PATIENT_RECORD = "patient-record"  # an HL7 update or merge (ATNA Patient Record)


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    MINOR_FAILURE = "minor-failure"
    SERIOUS_FAILURE = "serious-failure"
    REFUSED = "refused"


def store_outcome(status: IngestStatus) -> Outcome:
    """How a store is recorded, whichever way the instance came (DIMSE, HTTP)."""
    return {IngestStatus.CONFLICT: Outcome.MINOR_FAILURE,
            IngestStatus.TOMBSTONED: Outcome.REFUSED}.get(status, Outcome.SUCCESS)


@dataclass(frozen=True)
class AuditEvent:
    """One audit row; field order is :data:`node.index.AUDIT_COLUMNS`."""

    at: float = field(default_factory=time.time)
    action: str = ""
    outcome: str = Outcome.SUCCESS
    user: str = ""
    calling_aet: str = ""
    node_id: str = ""  # the node that acted (a joining node, the admin's node ...)
    address: str = ""  # where the request came from (IP)
    patient_id: str = ""
    study_uid: str = ""
    detail: str = ""

    def row(self) -> tuple[Any, ...]:
        return tuple(str(v) if isinstance(v, enum.Enum) else v for v in astuple(self))


class AuditTrail:
    def __init__(self, index: Index) -> None:
        """Create on the loop that owns ``index``."""
        self.index = index
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._pending: list[AuditEvent] = []
        self._queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def record(self, event: AuditEvent) -> None:
        """Queue ``event`` for writing; safe from any thread, never blocks."""
        if threading.get_ident() == self._loop_thread:
            self._add(event)
        else:
            self._loop.call_soon_threadsafe(self._add, event)

    def _add(self, event: AuditEvent) -> None:
        self._pending.append(event)
        self._queued.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def _run(self) -> None:
        while True:
            await self._queued.wait()
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except IndexFailure as exc:
                # The rows stay queued: a later round writes them, so none is lost
                # while the node runs; the failure is loud, not swallowed.
                log.error("audit trail not written yet (%d event(s) waiting): %s",
                          len(self._pending), exc)
                await asyncio.sleep(RETRY_AFTER)

    async def flush(self) -> None:
        """Write everything queued so far."""
        self._queued.clear()
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.index.append_audit([e.row() for e in batch])
        except BaseException:
            self._pending[:0] = batch
            self._queued.set()
            raise

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except IndexFailure as exc:
            # Stopping goes on (the index must still close); the loss is reported.
            log.error("%d audit event(s) could not be written at shutdown: %s",
                      len(self._pending), exc)


# --- reading (``pacsmesh audit``): straight from the index file, read-only -----------------

@dataclass(frozen=True)
class AuditFilter:
    since: float | None = None
    patient_id: str | None = None
    study_uid: str | None = None
    action: str | None = None


class AuditReadError(RuntimeError):
    """The audit trail cannot be read; the message is one line."""


def parse_since(text: str) -> float:
    """An ISO 8601 date or date-time (naive: local time) as a POSIX time."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise AuditReadError(f"--since must be an ISO 8601 date or time, got {text!r}") from None


def read_audit(index_path: Path, where: AuditFilter) -> list[dict[str, Any]]:
    """Rows oldest first. Opens the index read-only, so it works while the node runs."""
    if not index_path.exists():
        raise AuditReadError(f"no index at {index_path}: is this a PACSmesh data dir?")
    clauses: list[str] = []
    params: list[str | float] = []
    for column, value in (("patient_id", where.patient_id), ("study_uid", where.study_uid),
                          ("action", where.action)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.since is not None:
        clauses.append("at >= ?")
        params.append(where.since)
    sql = f"SELECT id, {', '.join(AUDIT_COLUMNS)} FROM audit"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    try:
        conn = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AuditReadError(f"cannot open {index_path}: {exc}") from None
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql + " ORDER BY id", params)]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise AuditReadError(
                f"{index_path} has no audit trail yet: start the node once to upgrade it"
            ) from None
        raise AuditReadError(f"cannot read {index_path}: {exc}") from None
    finally:
        conn.close()
