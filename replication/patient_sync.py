"""Patient events across the mesh (IHE PIR): every member pulls every live member's
events, as it pulls tombstones, sending the digest of what it holds so that a member
with the same set answers in a line. A member back from an outage is asked before
anti-entropy with it starts (replication.service), like tombstones.

Events need no signature of their own: the mesh API is members only (mutual TLS), and
an event's id (sender and MSH-10) makes a second copy of it the same event.
"""

from __future__ import annotations

import logging

from aiohttp import web

from discovery.service import Discovery
from node.patients.events import BadPatientEvent, PatientEvent
from node.patients.store import PatientStore
from replication.tombstone import digest
from replication.wire import PATIENT_EVENTS_PATH, PatientEventList

log = logging.getLogger(__name__)


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
    def __init__(self, store: PatientStore, discovery: Discovery) -> None:
        self.store = store
        self.discovery = discovery
        self._warned: set[str] = set()

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
