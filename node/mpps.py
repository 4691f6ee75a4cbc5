"""Modality Performed Procedure Steps: the rules of their states, and where they are kept.

A step is created IN PROGRESS and ends COMPLETED or DISCONTINUED; after that it may not
change (PS3.4 F.7.2). The rules are pure (:func:`check_create`, :func:`check_set`);
:class:`MppsStore` keeps each step (tables ``mpps`` and ``mpps_steps``, migration v11)
with its links to the scheduled steps it performed; :meth:`MppsStore.tell` passes each
committed change to a :class:`StepListener` (the worklist, once there is one).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Protocol

import aiosqlite
from pydicom.dataset import Dataset

from node.db import Database
from node.errors import RemoteFailure

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
FINAL = (COMPLETED, DISCONTINUED)

# N-CREATE / N-SET statuses, PS3.4 F.7.2.1.4 and F.7.2.2.4, PS3.7 Annex C.
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
# Error ID (0000,0903) with 0x0110: "Performed Procedure Step Object may no longer be
# updated" (PS3.4 F.7.2.2.4).
NO_LONGER_UPDATABLE = 0xA710


class StepRefused(ValueError, RemoteFailure):
    """A create or set that is not taken: its status (and Error ID), and why."""

    def __init__(self, status: int, why: str, error_id: int | None = None) -> None:
        super().__init__(why)
        self.status = status
        self.error_id = error_id


@dataclass(frozen=True)
class StepLink:
    """One item of the Scheduled Step Attributes Sequence: what the worklist knows."""

    accession_number: str = ""
    requested_procedure_id: str = ""
    scheduled_step_id: str = ""
    study_uid: str = ""


@dataclass(frozen=True)
class StepChange:
    mpps_uid: str
    status: str
    links: tuple[StepLink, ...]


class StepListener(Protocol):
    """The seam for the worklist: told after each committed create or set, so that the
    scheduled items ``change.links`` name follow the performed step's status."""

    async def step_changed(self, change: StepChange) -> None: ...


def _status(ds: Dataset) -> str:
    return str(ds.get("PerformedProcedureStepStatus", "") or "").strip().upper()


def check_create(attributes: Dataset) -> str:
    """The status a new step is created with (IN PROGRESS), else StepRefused."""
    if "PerformedProcedureStepStatus" not in attributes:
        raise StepRefused(MISSING_ATTRIBUTE, "no Performed Procedure Step Status")
    status = _status(attributes)
    if status != IN_PROGRESS:
        raise StepRefused(INVALID_ATTRIBUTE_VALUE,
                          f"a new step must be IN PROGRESS, not {status!r}")
    return status


def check_set(current: str, modifications: Dataset) -> str:
    """The status after an N-SET on a step now ``current``, else StepRefused."""
    if current in FINAL:
        raise StepRefused(PROCESSING_FAILURE, f"step is {current}: it may no longer be updated",
                          NO_LONGER_UPDATABLE)
    if "PerformedProcedureStepStatus" not in modifications:
        return current
    status = _status(modifications)
    if status not in (IN_PROGRESS, *FINAL):
        raise StepRefused(INVALID_ATTRIBUTE_VALUE, f"no such step status {status!r}")
    return status


def links_of(attributes: Dataset) -> tuple[StepLink, ...]:
    links = []
    for item in attributes.get("ScheduledStepAttributesSequence", None) or []:
        links.append(StepLink(
            *(str(item.get(k, "") or "") for k in (
                "AccessionNumber", "RequestedProcedureID", "ScheduledProcedureStepID",
                "StudyInstanceUID"))))
    return tuple(links)


class MppsStore:
    def __init__(self, db: Database, listener: StepListener | None = None) -> None:
        self._db = db
        self.listener = listener

    async def create(self, uid: str, attributes: Dataset, calling_aet: str) -> StepChange:
        """Record a new step; StepRefused if its status is wrong or it exists already."""
        status = check_create(attributes)
        links = links_of(attributes)
        now = time.time()
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO mpps (sop_uid, status, calling_aet, attributes,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (uid, status, calling_aet, attributes.to_json(), now, now))
            if cur.rowcount != 1:
                raise StepRefused(DUPLICATE_INSTANCE, "step exists already")
            await _write_links(conn, uid, links)
        return StepChange(uid, status, links)

    async def update(self, uid: str, modifications: Dataset) -> StepChange:
        """Apply an N-SET; StepRefused for an unknown or final step or a wrong status."""
        async with self._db.transaction() as conn:
            async with conn.execute(
                    "SELECT status, attributes FROM mpps WHERE sop_uid = ?", (uid,)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise StepRefused(NO_SUCH_INSTANCE, "no such step")
            status = check_set(str(row["status"]), modifications)
            stored = Dataset.from_json(json.loads(row["attributes"]))
            for element in modifications:
                stored[element.tag] = element
            stored.PerformedProcedureStepStatus = status
            await conn.execute(
                "UPDATE mpps SET status = ?, attributes = ?, updated_at = ? WHERE sop_uid = ?",
                (status, stored.to_json(), time.time(), uid))
            links = links_of(stored)
            if "ScheduledStepAttributesSequence" in modifications:
                await conn.execute("DELETE FROM mpps_steps WHERE mpps_uid = ?", (uid,))
                await _write_links(conn, uid, links)
        return StepChange(uid, status, links)

    async def get(self, uid: str) -> tuple[str, Dataset] | None:
        rows = await self._db.fetchall(
            "SELECT status, attributes FROM mpps WHERE sop_uid = ?", (uid,))
        if not rows:
            return None
        return str(rows[0]["status"]), Dataset.from_json(json.loads(rows[0]["attributes"]))

    async def links(self, uid: str) -> tuple[StepLink, ...]:
        rows = await self._db.fetchall(
            "SELECT accession_number, requested_procedure_id, scheduled_step_id, study_uid"
            " FROM mpps_steps WHERE mpps_uid = ? ORDER BY rowid", (uid,))
        return tuple(StepLink(*(str(v) for v in r.values())) for r in rows)

    async def tell(self, change: StepChange) -> None:
        """Tell the listener of a committed change (the handler does, after the commit,
        so that a listener's failure never undoes or hides the step)."""
        if self.listener is not None:
            await self.listener.step_changed(change)


async def _write_links(conn: aiosqlite.Connection, uid: str, links: tuple[StepLink, ...]) -> None:
    await conn.executemany(
        "INSERT INTO mpps_steps (mpps_uid, accession_number, requested_procedure_id,"
        " scheduled_step_id, study_uid) VALUES (?, ?, ?, ?, ?)",
        [(uid, x.accession_number, x.requested_procedure_id, x.scheduled_step_id,
          x.study_uid) for x in links])
