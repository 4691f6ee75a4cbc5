"""Roster sync: this node's roster in memory, on disk and as members gossip it.

Entries only ever merge (a union), from a member's answer, an admission here, or the file
the CLI writes; every merge is judged again, and the trust of the TLS contexts and the
peer table follow what the judgement says (members admitted are trusted, revoked ones
dropped).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from discovery.errors import ProbeFailed, RemoteAnswerInvalid
from discovery.membership import MembershipError, MembershipStore
from discovery.mesh_client import MeshClient
from discovery.peers import PeerTable
from discovery.roster import Roster, RosterError, RosterView
from discovery.wire import ROSTER_PATH, RosterPage

log = logging.getLogger("discovery.service")  # these lines have always come from there
REQUEST_SECONDS = 5.0


class RosterSync:
    def __init__(
        self, node_id: str, roster: Roster, view: RosterView, membership: MembershipStore,
        table: PeerTable, trust: Callable[[list[str]], None], forget: Callable[[str], None],
    ) -> None:
        self.node_id = node_id
        self.roster = roster
        self.view = view
        self._membership = membership
        self._table = table
        self._trust = trust  # the TLS contexts take in newly admitted members
        self._forget = forget  # calls to a revoked member are made no more
        self._trusted = set(view.members)
        self._warned: set[str] = set()
        self._mtime = membership.mtime()
        # One roster write at a time: concurrent admissions each persist their entry.
        self._persisting = asyncio.Lock()
        self.report_rejected(view)

    async def apply(self, incoming: Roster | None, persist: bool = True) -> None:
        """Merge entries into our roster, persist, and refresh trust and the peer table."""
        if incoming is not None:
            if (incoming.mesh_id, incoming.admin_key) != (self.roster.mesh_id,
                                                          self.roster.admin_key):
                log.warning("ignored a roster of another mesh")
                return
            if not self.roster.merge(incoming.entries):
                return
        view = self.roster.evaluate()
        self.report_rejected(view)
        new_certs = [m.cert_pem for nid, m in view.members.items() if nid not in self._trusted]
        if new_certs:
            self._trust(new_certs)
        self._trusted |= set(view.members)
        for node_id in view.revoked:
            self._forget(node_id)
            if self._table.peers.pop(node_id, None) is not None:
                log.warning("peer %s is revoked: refused from now on", node_id[:15])
        self.view = view
        if not view.is_member(self.node_id):
            mine = {str(e.get("sig", ""))[:16] for e in self.roster.entries
                    if e.get("node_id") == self.node_id}
            why = "; ".join(r for sig, r in view.rejected if sig in mine)
            if self.node_id in view.revoked or not why:
                log.error("this node has been revoked from the mesh; it now works alone")
            else:  # e.g. its AE title was admitted at the same time elsewhere, earlier
                log.error("this node's admission no longer stands (%s); it now works alone",
                          why)
        if persist:
            await self._persist()

    async def _persist(self) -> None:
        """Write our roster's entries to the file, and take in those only the file has (the
        CLI may have added some). The in-memory roster is merged into, never replaced:
        entries admitted while the file was being written must not be lost from memory."""
        async with self._persisting:
            snapshot = Roster(self.roster.mesh_id, self.roster.admin_key,
                              list(self.roster.entries))
            try:
                on_disk = await asyncio.to_thread(self._membership.merge, snapshot)
                self._mtime = self._membership.mtime()
            except (OSError, MembershipError) as exc:
                log.warning("could not save the roster: %s", exc)
                return
        if self.roster.merge(on_disk.entries):
            await self.apply(None, persist=False)

    def report_rejected(self, view: RosterView) -> None:
        for sig, reason in view.rejected:
            if sig not in self._warned:
                self._warned.add(sig)
                log.warning("roster entry %s ignored (tampered or forged?): %s", sig[:8], reason)

    async def reload_file(self) -> None:
        """Take in what the CLI wrote to the roster file since we last looked."""
        mtime = self._membership.mtime()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            on_disk = await asyncio.to_thread(self._membership.load)
        except MembershipError as exc:
            log.warning("%s", exc)
            return
        if on_disk is not None:
            await self.apply(on_disk, persist=False)

    async def pull(self, client: MeshClient, address: str, port: int, node_id: str) -> None:
        """Fetch a member's roster (its digest differs from ours) and merge it."""
        try:
            data = await client.call("GET", address, port, ROSTER_PATH, REQUEST_SECONDS,
                                     node_id)
            await self.apply(RosterPage.from_json(data).roster())
        except (ProbeFailed, RemoteAnswerInvalid, RosterError) as exc:
            log.debug("roster pull from %s:%d: %s", address, port, exc)

    async def handler(self, request: web.Request) -> web.Response:
        return web.json_response(RosterPage.of(self.roster).to_json())
