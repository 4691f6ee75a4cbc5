"""Order events in the index (the migration after v13, owner "node"): stored once, never
changed, and the current item of every touched accession rewritten from all of them in
the transaction that adds one (``worklist_items``, a view for operators and tests; the
node answers from the items it resolved in memory).

As with patient events (node.patients.store), the whole set is resolved again on every
change: a RIS sends a few thousand orders a day, and a set resolved from scratch cannot
drift from one resolved incrementally on another node.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from node.db import Database
from node.worklist.current import Item, problem, resolve
from node.worklist.events import Control, OrderEvent, OrderEventError


class OrderRefused(OrderEventError):
    """An order event that cannot be applied to the items this node knows (answered AE):
    ``duplicate`` for a new order whose accession is taken, else an unknown or ended one."""

    def __init__(self, text: str, duplicate: bool) -> None:
        super().__init__(text)
        self.duplicate = duplicate


@dataclass(frozen=True)
class Accepted:
    event: OrderEvent
    new: bool  # False: a repeat, acknowledged again and applied once


class WorklistStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._events: dict[str, OrderEvent] = {}
        self.items: dict[str, Item] = {}
        self._changing = asyncio.Lock()

    async def open(self) -> None:
        rows = await self._db.fetchall("SELECT document FROM order_events")
        self._events = {e.event_id: e for e in
                        (OrderEvent.from_json(json.loads(r["document"])) for r in rows)}
        self.items = resolve(self._events.values())

    def events(self) -> list[OrderEvent]:
        return sorted(self._events.values(), key=lambda e: e.order)

    def visible(self) -> list[Item]:
        """The items the worklist shows (not completed, discontinued or cancelled)."""
        return [item for _, item in sorted(self.items.items()) if not item.hidden]

    async def accept(self, event: OrderEvent) -> Accepted:
        """Apply an order from the RIS; durable when this returns. Raises
        :class:`OrderRefused` for one the current items cannot take."""
        async with self._changing:
            if event.event_id in self._events:
                return Accepted(self._events[event.event_id], new=False)
            why = problem(self.items, event)
            if why is not None:
                raise OrderRefused(why, duplicate=event.control is Control.NEW)
            event = self._after_its_item(event)
            await self._store([event], received_from="")
            return Accepted(event, new=True)  # its time maybe moved after its item's

    def _after_its_item(self, event: OrderEvent) -> OrderEvent:
        """The event, ordered after every event of its accession already applied: a RIS
        sends a new order and its cancel within the second MSH-7 counts in, and what was
        accepted after must stay after (the stored time is the order on every node)."""
        last = max((e.order for e in self._events.values()
                    if e.accession == event.accession), default=None)
        if last is None or event.order > last:
            return event
        later = datetime.fromisoformat(last[0]) + timedelta(microseconds=1)
        return replace(event, at=later.isoformat(timespec="microseconds"))

    async def receive(self, events: Iterable[OrderEvent], source: str) -> int:
        """Events from another member, stored as they are; how many were new."""
        async with self._changing:
            fresh = [e for e in {e.event_id: e for e in events}.values()
                     if e.event_id not in self._events]
            if fresh:
                await self._store(fresh, received_from=source)
            return len(fresh)

    async def _store(self, events: list[OrderEvent], received_from: str) -> None:
        after = dict(self._events)
        after.update((e.event_id, e) for e in events)
        items = resolve(after.values())
        touched = sorted({e.accession for e in events})
        now = time.time()
        async with self._db.transaction() as conn:
            await conn.executemany(
                "INSERT OR IGNORE INTO order_events (event_id, accession, at, document,"
                " origin, received_from, received_at) VALUES (?,?,?,?,?,?,?)",
                [(e.event_id, e.accession, e.at, e.dumps(), e.origin, received_from, now)
                 for e in events])
            await conn.executemany("DELETE FROM worklist_items WHERE accession = ?",
                                   [(a,) for a in touched])
            await conn.executemany(
                "INSERT INTO worklist_items (accession, patient_id, patient_issuer, status,"
                " document) VALUES (?,?,?,?,?)",
                [(a, items[a].patient.id, items[a].patient.issuer, str(items[a].status),
                  json.dumps(items[a].fields, sort_keys=True, ensure_ascii=False))
                 for a in touched if a in items])
        self._events, self.items = after, items
