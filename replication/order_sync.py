"""Order events across the mesh (the worklist, node.worklist): every member pulls every
live member's order events with its patient events, sending the digest of what it
holds, so that a member with the same set answers in a line. Every member then serves
the same worklist, with the node that received the order gone.

The same exchange as replication.patient_sync, without its hold: a worklist answered
without the newest order is one a modality asks again.
"""

from __future__ import annotations

import logging

from aiohttp import web

from discovery.service import Discovery
from node.worklist.events import BadOrderEvent, OrderEvent
from node.worklist.store import WorklistStore
from replication.tombstone import digest
from replication.wire import ORDER_EVENTS_PATH, OrderEventList

log = logging.getLogger(__name__)


def routes(store: WorklistStore) -> list[web.RouteDef]:
    async def order_events(request: web.Request) -> web.Response:
        events = store.events()
        ours = digest(e.event_id for e in events)
        same = request.query.get("digest") == ours
        answer = OrderEventList(ours, same=same,
                                events=() if same else tuple(e.to_json() for e in events))
        return web.json_response(answer.to_json())

    return [web.get(ORDER_EVENTS_PATH, order_events)]


class OrderEventSync:
    def __init__(self, store: WorklistStore, discovery: Discovery) -> None:
        self.store = store
        self.discovery = discovery
        self._warned: set[str] = set()

    async def pull(self, peer: str) -> int:
        """Learn the order events ``peer`` holds that we lack; how many were new. Raises
        ProbeFailed, and RemoteAnswerInvalid for an answer that is not an event list."""
        answer = OrderEventList.from_json(await self.discovery.ask_member(
            peer, "GET", ORDER_EVENTS_PATH,
            params={"digest": digest(e.event_id for e in self.store.events())}))
        if answer.same:
            return 0
        events = []
        for document in answer.events:
            try:
                events.append(OrderEvent.from_json(document))
            except BadOrderEvent as exc:
                if peer not in self._warned:
                    self._warned.add(peer)
                    log.warning("order event from %s ignored: %s", peer[:15], exc)
        new = await self.store.receive(events, peer)
        if new:
            log.info("%d order event(s) learnt from %s", new, peer[:15])
        return new
