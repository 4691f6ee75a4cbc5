"""Patient events in the index (the migration after v10, owner "node"): stored once,
never changed, and the current identity of every touched Patient ID rewritten from all
of them in the transaction that adds one.

The whole set is resolved again on every change (node.patients.current): an ADT feed is
a few thousand messages a day, and a set resolved from scratch cannot drift from one
resolved incrementally on another node.

The index has no Issuer of Patient ID column, so stored studies are matched by Patient
ID alone: when events name one ID under several issuers, the one without an issuer, else
the smallest, gives the stored ID its presentation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from node.db import Database
from node.index import Index
from node.patients.current import Identities, merge_problem, resolve
from node.patients.events import PatientEvent, PatientEventError, PatientKey
from node.patients.present import Presentation, coerce

# Whether some stored study (here or, as the catalog knows, on another member) has this
# Patient ID: the composition root answers it from the index.
KnownPatient = Callable[[str], Awaitable[bool]]
# The longest a query waits for patient events due from another member.
HOLD_BOUND = 5.0


def index_knows(index: Index) -> KnownPatient:
    """Whether the index (the mesh catalog too, when the node is in one) holds a study
    stored under the Patient ID."""
    async def known(patient_id: str) -> bool:
        rows = await index.db.fetchall(
            f"SELECT 1 FROM {index.stored_tables().studies} WHERE patient_id = ? LIMIT 1",
            (patient_id,))
        return bool(rows)
    return known


class EventRefused(PatientEventError):
    """An event that cannot be applied to what this node knows (answered AE)."""

    def __init__(self, text: str, location: str) -> None:
        super().__init__(text)
        self.location = location


@dataclass(frozen=True)
class Accepted:
    event: PatientEvent
    new: bool  # False: a repeat, acknowledged again and applied once


class PatientStore:
    def __init__(self, db: Database, known: KnownPatient) -> None:
        self._db = db
        self._known = known
        self._events: dict[str, PatientEvent] = {}
        self.identities = Identities()
        self._presented: dict[str, Presentation] = {}
        # One change at a time: each resolves the whole set as it will be once stored.
        self._changing = asyncio.Lock()
        self._current = asyncio.Event()
        self._current.set()
        # Asked by every query: whether a member is up whose events were not asked for
        # since it was last seen down (set by the mesh; a lone node has none).
        self.due: Callable[[], bool] = lambda: False
        # Awaited with the keys whose presentation changed and the events that changed
        # it, once their rows are durable, before the change is acknowledged.
        self.on_change: Callable[[set[PatientKey], list[PatientEvent]],
                                 Awaitable[None]] | None = None

    async def open(self) -> None:
        rows = await self._db.fetchall("SELECT document FROM patient_events")
        self._events = {e.event_id: e for e in
                        (PatientEvent.from_json(json.loads(r["document"])) for r in rows)}
        self.identities = resolve(self._events.values())
        self._presented = _presented(self.identities)

    def hold(self) -> None:
        """Queries wait (see :meth:`current`): events from another member are due."""
        self._current.clear()

    def release(self) -> None:
        self._current.set()

    async def current(self) -> None:
        """Return once the events due from other members are here, or after HOLD_BOUND:
        a member that cannot be asked must not stop this node answering."""
        if self._current.is_set() and self.due():
            self.hold()  # seen up since the last round of the mesh: released once asked
        if not self._current.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._current.wait(), HOLD_BOUND)

    @property
    def touched(self) -> bool:
        """Whether any event exists: without one, nothing is presented differently."""
        return bool(self._events)

    def presents(self, stored_patient_id: str) -> bool:
        """Whether what is stored under the ID is presented otherwise now."""
        return stored_patient_id in self._presented

    def coerce(self, ds: Dataset) -> bool:
        """Give a data set about to leave the node its patient's current identity
        (node.patients.present); whether it changed. Called from any thread: it reads
        one dict, replaced whole when events change it."""
        presentation = self._presented.get(str(ds.get("PatientID", "") or ""))
        return presentation is not None and coerce(ds, presentation)

    def events(self) -> list[PatientEvent]:
        return sorted(self._events.values(), key=lambda e: e.order)

    def history(self, key: PatientKey) -> list[PatientEvent]:
        """The events that name ``key`` or a key merged into it, in order."""
        root = self.identities.root(key)
        return [e for e in self.events()
                if self.identities.root(e.patient) == root
                or (e.prior is not None and self.identities.root(e.prior) == root)]

    async def accept(self, event: PatientEvent) -> Accepted:
        """Apply an event received from the HIS; durable when this returns. Raises
        :class:`EventRefused` for a merge this node cannot apply."""
        async with self._changing:
            return await self._accept(event)

    async def _accept(self, event: PatientEvent) -> Accepted:
        if event.event_id in self._events:
            return Accepted(self._events[event.event_id], new=False)
        problem = merge_problem(self.identities, event)
        if problem is not None:
            raise EventRefused(problem, "MRG^1^1")
        if event.prior is not None and event.prior not in self.identities.keys() \
                and not await self._known(event.prior.id):
            raise EventRefused(f"no patient {event.prior} is known here", "MRG^1^1")
        await self._store([event], received_from="")
        return Accepted(event, new=True)

    async def receive(self, events: Iterable[PatientEvent], source: str) -> int:
        """Events from another member: stored as they are (the order settles crossing
        merges); returns how many were new."""
        async with self._changing:
            fresh = [e for e in {e.event_id: e for e in events}.values()
                     if e.event_id not in self._events]
            if fresh:
                await self._store(fresh, received_from=source)
            return len(fresh)

    async def _store(self, events: list[PatientEvent], received_from: str) -> None:
        after = dict(self._events)
        after.update((e.event_id, e) for e in events)
        identities = resolve(after.values())
        presented = _presented(identities)
        now = time.time()
        async with self._db.transaction() as conn:
            await conn.executemany(
                "INSERT OR IGNORE INTO patient_events (event_id, at, document, origin,"
                " received_from, received_at) VALUES (?,?,?,?,?,?)",
                [(e.event_id, e.at, e.dumps(), e.origin, received_from, now) for e in events])
            await conn.execute("DELETE FROM patient_current")
            await conn.executemany(
                "INSERT INTO patient_current (patient_id, current_id, current_issuer,"
                " patient_name, patient_birth_date, patient_sex, merged)"
                " VALUES (?,?,?,?,?,?,?)",
                [(stored_id, p.patient_id, p.issuer, p.attributes.get("PatientName"),
                  p.attributes.get("PatientBirthDate"), p.attributes.get("PatientSex"),
                  int(p.merged)) for stored_id, p in sorted(presented.items())])
        before = self.identities
        self._events, self.identities, self._presented = after, identities, presented
        if self.on_change is not None:
            changed = {k for k in identities.keys()
                       if identities.current(k) != before.current(k)}
            await self.on_change(changed, events)


def _presented(ids: Identities) -> dict[str, Presentation]:
    """Stored Patient ID -> its presentation (see the module's note on issuers)."""
    by_id: dict[str, PatientKey] = {}
    for key in sorted(ids.keys(), key=lambda k: (k.id, k.issuer != "", k.issuer)):
        by_id.setdefault(key.id, key)
    out = {}
    for patient_id, key in by_id.items():
        now = ids.current(key)
        out[patient_id] = Presentation(now.key.id, now.key.issuer, now.attributes, now.merged)
    return out
