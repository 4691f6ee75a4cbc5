"""Fills node/'s :class:`node.mesh_view.MeshView` seam from discovery (roster, liveness)
and replication (debt, outbox, fetches, catalog), for the dashboard, /metrics and alerts."""

from __future__ import annotations

from dataclasses import dataclass

from discovery.service import Discovery
from node.index import Index
from node.mesh_view import Member, MeshSnapshot, PeerDebt, UnderReplicated
from replication.catalog_store import CatalogStore
from replication.durability import Durability
from replication.fetch import FetchStats
from replication.http import member_aets
from replication.member_health import MemberHealth
from replication.service import Replicator


@dataclass
class MeshBridge:
    index: Index
    discovery: Discovery
    replicator: Replicator
    durability: Durability
    fetches: FetchStats
    reports: MemberHealth

    @property
    def catalog(self) -> CatalogStore:
        return CatalogStore(self.index.db)

    def _members(self) -> list[Member]:
        d = self.discovery
        aets = member_aets(d)
        out = []
        for node_id in d.members():
            if node_id == d.node_id:
                out.append(Member(node_id, aets.get(node_id, ""), "self", is_self=True))
                continue
            peer = d.table.peers.get(node_id)
            if peer is None:
                out.append(Member(node_id, aets.get(node_id, ""), "unknown"))
                continue
            told = self.reports.get(node_id)
            out.append(Member(
                node_id, peer.aet or aets.get(node_id, ""), peer.state.value, peer.addresses,
                None if peer.last_seen is None else d.to_wall(peer.last_seen),
                d.to_wall(peer.first_seen), is_self=False,
                since=None if peer.state_since is None else d.to_wall(peer.state_since),
                clock_offset=None if told is None else told.clock_offset,
                version=None if told is None else told.version,
                studies=None if told is None else told.studies,
                stored_bytes=None if told is None else told.stored_bytes,
                disk_free=None if told is None else told.disk_free))
        return out

    async def snapshot(self) -> MeshSnapshot:
        debt = await self.durability.owed()
        debts = tuple(
            PeerDebt(p["node_id"], p["aet"], p["outbox_depth"], p["outbox_bytes"],
                     p["bytes_per_second"], p["catch_up"]["eta_seconds"], p["breaker"])
            for p in await self.replicator.peers_status())
        under = tuple(UnderReplicated(uid, "too few members" if uid in debt.short
                                      else "copies owed") for uid in sorted(debt.studies))
        return MeshSnapshot(tuple(self._members()), debts, under, debt.copies,
                            self.fetches.failovers, self.fetches.failed)

    async def refresh(self) -> None:
        await self.reports.refresh()

    async def holders(self, study_uid: str) -> list[str]:
        aets = member_aets(self.discovery)
        held = await self.catalog.study_holders(study_uid)
        if await self.index.study_instance_count(study_uid):  # the catalog lists others
            held[self.discovery.node_id] = 1
        return sorted(aets.get(n, n[:16]) for n in held)
