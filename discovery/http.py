"""Discovery's HTTP endpoints, added to the node's API by the composition root."""

from __future__ import annotations

from aiohttp import web

from discovery.probe import HELLO_PATH
from discovery.service import Discovery


def routes(discovery: Discovery) -> list[web.RouteDef]:
    async def hello(request: web.Request) -> web.Response:
        if request.remote:
            discovery.introduced(request.remote, dict(request.query))
        return web.json_response(discovery.hello())

    async def peers(request: web.Request) -> web.Response:
        return web.json_response(discovery.peers_json())

    return [web.get(HELLO_PATH, hello), web.get("/api/peers", peers)]
