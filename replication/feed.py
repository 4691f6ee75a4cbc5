"""The change feed members pull from each other: what a node stored since a checkpoint.

Served on the mesh API (members only, mutual TLS), so a reconnecting node receives only
what changed since the last sequence number it saw from that peer.
"""

from __future__ import annotations

from aiohttp import web

from node.index import Index
from replication.wire import CHANGES_PATH

__all__ = ["CHANGES_PATH", "MAX_PAGE", "routes"]
MAX_PAGE = 1000


def routes(index: Index) -> list[web.RouteDef]:
    async def changes(request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            limit = min(int(request.query.get("limit", str(MAX_PAGE))), MAX_PAGE)
        except ValueError:
            raise web.HTTPBadRequest(text="since and limit must be integers") from None
        if since < 0 or limit < 1:
            raise web.HTTPBadRequest(text="since must be >= 0 and limit >= 1")
        rows = await index.changes_since(since, limit + 1)
        page = rows[:limit]
        return web.json_response({
            "changes": page,
            "next": page[-1]["seq"] if page else since,
            "more": len(rows) > limit,
        })

    return [web.get(CHANGES_PATH, changes)]
