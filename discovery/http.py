"""Discovery's endpoints on the node's local HTTP API, added by the composition root."""

from __future__ import annotations

from aiohttp import web

from discovery.service import Discovery


def routes(discovery: Discovery) -> list[web.RouteDef]:
    async def peers(request: web.Request) -> web.Response:
        return web.json_response(discovery.peers_json())

    async def mesh(request: web.Request) -> web.Response:
        view = discovery.view
        members = [] if view is None else [
            {"node_id": m.node_id, "aet": m.aet, "admitted_by": m.admitted_by,
             "admitted_at": m.admitted_at}
            for m in sorted(view.members.values(), key=lambda m: m.admitted_at)
        ]
        return web.json_response({
            "node_id": discovery.node_id,
            "member": discovery.is_member,
            "mesh": discovery.mesh_hash,
            "roster_version": view.version if view else 0,
            "roster_digest": view.digest if view else "",
            "members": members,
            "revoked": sorted(view.revoked) if view else [],
            "join": discovery.join_status(),
        })

    return [web.get("/api/peers", peers), web.get("/api/mesh", mesh)]
