"""Each member's own facts for the dashboard (version, studies, disk) and its clock offset:
a mesh endpoint that answers them, and a poller that asks every live member. The offset is
the member's clock minus ours at the midpoint of the request, good to about half a round
trip: plenty for a 2 s alert."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from discovery.errors import ProbeFailed
from discovery.service import Discovery

log = logging.getLogger(__name__)
HEALTH_PATH = "/mesh/health"
ASK_SECONDS = 5.0


@dataclass(frozen=True)
class Reported:
    version: str
    studies: int
    stored_bytes: int
    disk_free: int
    clock_offset: float


def routes(local: Callable[[], Awaitable[dict[str, Any]]]) -> list[web.RouteDef]:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({**await local(), "time": time.time()})

    return [web.get(HEALTH_PATH, health)]


def _reported(answer: Any, offset: float) -> Reported:
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    return Reported(str(answer["version"]), int(answer["studies"]),
                    int(answer["stored_bytes"]), int(answer["disk_free"]), offset)


class MemberHealth:
    def __init__(self, discovery: Discovery, wall: Callable[[], float] = time.time) -> None:
        self.discovery = discovery
        self.wall = wall
        self._known: dict[str, Reported] = {}

    def get(self, node_id: str) -> Reported | None:
        return self._known.get(node_id)

    async def _ask(self, node_id: str) -> None:
        before = self.wall()
        try:
            answer = await self.discovery.ask_member(node_id, "GET", HEALTH_PATH,
                                                     seconds=ASK_SECONDS)
            after = self.wall()
            theirs = float(answer["time"])
            self._known[node_id] = _reported(answer, theirs - (before + after) / 2)
        except (ProbeFailed, KeyError, TypeError, ValueError) as exc:
            # Liveness is discovery's to judge; here the member's facts are only unknown.
            self._known.pop(node_id, None)
            log.debug("member %s health not known: %s", node_id[:15], exc)

    async def refresh(self) -> None:
        d = self.discovery
        alive = [n for n in d.members() if n != d.node_id and d.is_alive(n)]
        for gone in set(self._known) - set(alive):
            del self._known[gone]
        await asyncio.gather(*(self._ask(n) for n in alive))
