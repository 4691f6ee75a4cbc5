"""Patient events across the mesh (IHE PIR): every member pulls every live member's
events, as it pulls tombstones, sending the digest of what it holds so that a member
with the same set answers in a line. A member back from an outage is asked before
anti-entropy with it starts (replication.service), like tombstones.

Events need no signature of their own: the mesh API is members only (mutual TLS), and
an event's id (sender and MSH-10) makes a second copy of it the same event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web

from discovery.service import Discovery
from node.patients.events import BadPatientEvent, PatientEvent
from node.patients.store import PatientStore
from replication.tombstone import digest
from replication.wire import PATIENT_EVENTS_PATH, PatientEventList

log = logging.getLogger(__name__)
# For this long after start-up queries wait (each at most node.patients.store.HOLD_BOUND)
# until every member, not only those seen alive yet, was asked for its events.
STARTUP_HOLD = 3.0


def routes(store: PatientStore) -> list[web.RouteDef]:
    async def patient_events(request: web.Request) -> web.Response:
        events = store.events()
        ours = digest(e.event_id for e in events)
        if request.query.get("digest") == ours:
            return web.json_response(PatientEventList(ours, same=True).to_json())
        return web.json_response(
            PatientEventList(ours, events=tuple(e.to_json() for e in events)).to_json())

    return [web.get(PATIENT_EVENTS_PATH, patient_events)]


class PatientEventSync:
    """Pulls, and holds this node's queries (``PatientStore.hold``, each for a bounded
    time) while a member is alive whose events have not been asked for since it was
    last seen down, and for a while after start-up, every member: a node back from an
    outage must not answer with the identity it had before the merge."""

    def __init__(self, store: PatientStore, discovery: Discovery,
                 clock: Callable[[], float] = time.monotonic,
                 alive: Callable[[], set[str]] | None = None) -> None:
        self.store = store
        self.discovery = discovery
        self._alive = alive
        self._warned: set[str] = set()
        self._asked: set[str] = set()
        self._clock = clock
        self._started = clock()
        if alive is not None:
            store.due = self.due

    def track(self, others: set[str], alive: set[str]) -> None:
        """Called every round with the other members and those alive now."""
        self._asked &= alive
        waiting = (others & alive) - self._asked
        if self._clock() - self._started < STARTUP_HOLD:
            waiting |= others - self._asked
        if waiting:
            self.store.hold()
        else:
            self.store.release()

    def due(self) -> bool:
        """At query time: whether a member is alive now that was not asked since it was
        last seen down. Rounds (:meth:`track`) run every half second; a query made between
        a member coming back and the next round must wait for that member too."""
        assert self._alive is not None
        others = set(self.discovery.members()) - {self.discovery.node_id}
        return bool((others & self._alive()) - self._asked)

    def asked(self, peer: str) -> None:
        """``peer`` was asked for its events (answered or not: a bound, not a wait)."""
        self._asked.add(peer)

    async def pull(self, peer: str) -> int:
        """Learn the events ``peer`` holds that we lack; how many were new. Raises
        ProbeFailed, and RemoteAnswerInvalid for an answer that is not an event list."""
        ours = digest(e.event_id for e in self.store.events())
        answer = PatientEventList.from_json(await self.discovery.ask_member(
            peer, "GET", PATIENT_EVENTS_PATH, params={"digest": ours}))
        if answer.same:
            return 0
        events = []
        for document in answer.events:
            try:
                events.append(PatientEvent.from_json(document))
            except BadPatientEvent as exc:
                if peer not in self._warned:
                    self._warned.add(peer)
                    log.warning("patient event from %s ignored: %s", peer[:15], exc)
        new = await self.store.receive(events, peer)
        if new:
            log.info("%d patient event(s) learnt from %s", new, peer[:15])
        return new
