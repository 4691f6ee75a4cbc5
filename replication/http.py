"""Replication's endpoints on the node's local HTTP API."""

from __future__ import annotations

from aiohttp import web

from discovery.service import Discovery
from node.index import Index
from replication.catalog_store import CatalogStore
from replication.durability import Durability
from replication.tombstone_store import TombstoneStore


def member_aets(discovery: Discovery) -> dict[str, str]:
    view = discovery.view
    return {} if view is None else {n: m.aet for n, m in view.members.items()}


def routes(index: Index, discovery: Discovery, durability: Durability) -> list[web.RouteDef]:
    catalog, stones = CatalogStore(index.db), TombstoneStore(index.db)

    async def study(request: web.Request) -> web.Response:
        """Who holds a study: this node (its own index) and members (the catalog); and
        what this node still owes its owners (replication.durability)."""
        uid = request.match_info["study_uid"]
        holders = await catalog.study_holders(uid)
        local = await index.study_instance_count(uid)
        if local:
            holders[discovery.node_id] = local
        if not holders:
            raise web.HTTPNotFound(text="no node of the mesh is known to hold this study")
        view = discovery.view
        debt = await durability.owed(uid)
        return web.json_response({
            "StudyInstanceUID": uid,
            # False while a copy this node received is not yet acknowledged by an owner.
            "replicated": debt.replicated,
            **debt.as_json(member_aets(discovery)),
            "holders": [
                {"node_id": node_id, "instances": count,
                 "aet": view.members[node_id].aet if view and node_id in view.members else "",
                 "this_node": node_id == discovery.node_id}
                for node_id, count in sorted(holders.items())
            ],
        })

    async def tombstones(request: web.Request) -> web.Response:
        """The studies deleted mesh-wide, and what deleting each removed here."""
        return web.json_response([
            {"StudyInstanceUID": r.study_uid, "deleted_by": r.deleted_by,
             "deleted_at": r.deleted_at, "reason": r.reason,
             "received_from": r.received_from, "applied_at": r.applied_at,
             "instances_removed": r.instances_removed, "bytes_removed": r.bytes_removed,
             "applied_on": discovery.node_id}
            for r in await stones.tombstones()
        ])

    return [web.get("/api/studies/{study_uid}", study),
            web.get("/api/tombstones", tombstones)]
