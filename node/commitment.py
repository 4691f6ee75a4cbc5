"""Storage commitment: which requested instances are safe, and the requests that wait.

"Committed" here means what the architecture promises (../shared/ARCHITECTURE.md,
honest guarantees): durable, hash-checked, and on R members of the mesh. A modality that
deletes its copy after a commitment must never hold the last one, so an instance is
reported committed only when :func:`sort_items` counts enough copies; until then the
request waits in the ``commitments`` table (migration v11) until its deadline, and what
is still short then is reported failed.

The mesh's side (who else holds a copy durably) comes through :class:`DurableCopies`,
filled by the composition root; a node outside any mesh counts only its own copy
(:class:`LoneNode`: one copy is all a lone PACS can give, and it is what it had before).
The verdict is pure; :class:`CommitmentStore` is the I/O edge.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from node.db import Database

# Failure Reason (0008,1197) values, PS3.4 J.3.2.1.1.3 / C.4.2.1.4.
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119

WAITING, REPORTING, REPORTED, UNDELIVERED = "waiting", "reporting", "reported", "undelivered"


class DurableCopies(Protocol):
    """The mesh, as far as a commitment needs it."""

    def required(self) -> int:
        """How many durable copies an instance needs before it counts as committed."""
        ...

    async def other_holders(self, wanted: Mapping[str, str | None]) -> dict[str, frozenset[str]]:
        """sop_uid -> the members other than this node known to hold it durably, with
        the given SHA-256 (``None``: not held here; members agreeing on one)."""
        ...


class LoneNode:
    """No mesh: this node's own durable copy is the only one there can be."""

    def required(self) -> int:
        return 1

    async def other_holders(self, wanted: Mapping[str, str | None]) -> dict[str, frozenset[str]]:
        return {}


@dataclass(frozen=True)
class Item:
    sop_class_uid: str
    sop_uid: str


@dataclass(frozen=True)
class Held:
    """This node's copy of an instance, after its file was hashed again."""

    sop_class_uid: str
    sha256: str
    verified: bool


@dataclass(frozen=True)
class Verdict:
    committed: tuple[Item, ...]
    failed: tuple[tuple[Item, int], ...]

    def as_json(self) -> str:
        return json.dumps({
            "committed": [[i.sop_class_uid, i.sop_uid] for i in self.committed],
            "failed": [[i.sop_class_uid, i.sop_uid, reason] for i, reason in self.failed],
        })

    @classmethod
    def from_json(cls, text: str) -> Verdict:
        data = json.loads(text)
        return cls(tuple(Item(c, s) for c, s in data["committed"]),
                   tuple((Item(c, s), int(r)) for c, s, r in data["failed"]))


def copies_of(item: Item, held: Held | None, others: frozenset[str]) -> int:
    return (1 if held is not None and held.verified else 0) + len(others)


def sort_items(
    items: Iterable[Item], held: Mapping[str, Held], others: Mapping[str, frozenset[str]],
    required: int, expired: bool,
) -> Verdict | None:
    """The report once every instance is settled, or the deadline passed; None while
    some instance may still become safe."""
    committed: list[Item] = []
    failed: list[tuple[Item, int]] = []
    for item in items:
        mine = held.get(item.sop_uid)
        if mine is not None and mine.sop_class_uid != item.sop_class_uid:
            # Another class under the same UID: no number of copies makes it right.
            failed.append((item, CLASS_INSTANCE_CONFLICT))
            continue
        copies = copies_of(item, mine, others.get(item.sop_uid, frozenset()))
        if copies >= required:
            committed.append(item)
        elif not expired:
            return None
        else:
            failed.append((item, PROCESSING_FAILURE if copies else NO_SUCH_OBJECT))
    return Verdict(tuple(committed), tuple(failed))


@dataclass(frozen=True)
class Request:
    transaction_uid: str
    requester: str
    items: tuple[Item, ...]
    deadline: float  # wall clock: it must mean the same after a restart
    state: str = WAITING
    report: Verdict | None = None
    attempts: int = 0
    next_try: float = 0.0


def _request(row: dict[str, Any]) -> Request:
    return Request(
        row["transaction_uid"], row["requester"],
        tuple(Item(c, s) for c, s in json.loads(row["items"])), float(row["deadline"]),
        row["state"], Verdict.from_json(row["report"]) if row["report"] else None,
        int(row["attempts"]), float(row["next_try"]))


class CommitmentStore:
    """The ``commitments`` table: one row per (requester, Transaction UID)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, request: Request) -> bool:
        """Record a new request; False if this requester already sent this transaction
        (a repeated N-ACTION: the first one stands, nothing changes)."""
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO commitments (transaction_uid, requester, items,"
                " received_at, deadline) VALUES (?, ?, ?, ?, ?)",
                (request.transaction_uid, request.requester,
                 json.dumps([[i.sop_class_uid, i.sop_uid] for i in request.items]),
                 time.time(), request.deadline))
            return cur.rowcount == 1

    async def open_requests(self) -> list[Request]:
        rows = await self._db.fetchall(
            "SELECT * FROM commitments WHERE state IN (?, ?) ORDER BY received_at",
            (WAITING, REPORTING))
        return [_request(r) for r in rows]

    async def get(self, requester: str, transaction_uid: str) -> Request | None:
        rows = await self._db.fetchall(
            "SELECT * FROM commitments WHERE requester = ? AND transaction_uid = ?",
            (requester, transaction_uid))
        return _request(rows[0]) if rows else None

    async def decide(self, request: Request, verdict: Verdict) -> None:
        """Fix the report: every retry sends the same one."""
        await self._set(request, "state = ?, report = ?", (REPORTING, verdict.as_json()))

    async def attempted(self, request: Request, next_try: float | None) -> None:
        """One delivery failed: try again at ``next_try``, or never (None)."""
        if next_try is None:
            await self._set(request, "state = ?, attempts = attempts + 1", (UNDELIVERED,))
        else:
            await self._set(request, "attempts = attempts + 1, next_try = ?", (next_try,))

    async def reported(self, request: Request) -> None:
        await self._set(request, "state = ?", (REPORTED,))

    async def _set(self, request: Request, assignments: str, values: tuple[Any, ...]) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                f"UPDATE commitments SET {assignments}"
                " WHERE requester = ? AND transaction_uid = ?",
                (*values, request.requester, request.transaction_uid))

    async def local_instances(self, sop_uids: list[str]) -> dict[str, tuple[str, str]]:
        """sop_uid -> (SOP class, SHA-256) of the instances this node's index holds."""
        found: dict[str, tuple[str, str]] = {}
        for start in range(0, len(sop_uids), 500):  # SQLite's limit on parameters
            part = sop_uids[start:start + 500]
            rows = await self._db.fetchall(
                f"SELECT sop_uid, sop_class_uid, sha256 FROM instances"
                f" WHERE sop_uid IN ({', '.join('?' * len(part))})", part)
            found.update((r["sop_uid"], (r["sop_class_uid"], r["sha256"])) for r in rows)
        return found
