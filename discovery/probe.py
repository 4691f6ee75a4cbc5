"""Liveness: probing members over the mesh API, and answering their probes.

A probe is a hello (``GET /mesh/hello``) made with a context that proves who answers; its
answer carries the peers the other side knows (peer exchange), and a roster digest that,
if it differs from ours, has the roster pulled. Peers that answered are persisted, so a
restarted node re-contacts them.

``ProbeFailed``, ``Refused``, ``Hello``, the paths, ``call`` and ``stream`` are importable
from here too, as they were before they moved (replication and tests import them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from discovery import json_fields as f
from discovery.errors import ProbeFailed, Refused, RemoteAnswerInvalid
from discovery.mesh_client import MeshClient, call, stream, url_host
from discovery.peers import Peer, PeerState, PeerTable
from discovery.roster import RosterView
from discovery.settings import DiscoverySettings
from discovery.wire import HELLO_PATH, JOIN_PATH, ROSTER_PATH, Hello, Introduction, PeerInfo

__all__ = ["HELLO_PATH", "JOIN_PATH", "ROSTER_PATH", "Hello", "PeerStore", "ProbeFailed",
           "Prober", "Refused", "call", "stream", "url_host"]

log = logging.getLogger("discovery.service")  # these lines have always come from there


class PeerStore:
    """Where last-known peers persist (the composition root backs it with the index)."""

    def __init__(
        self,
        load: Callable[[], Awaitable[list[dict[str, Any]]]],
        save: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.load = load
        self.save = save


class _Unusable(Exception):
    """A persisted row without the shape we write (from an older or damaged index)."""


def _persisted(row: dict[str, Any]) -> PeerInfo:
    fail = _Unusable
    return PeerInfo(
        node_id=f.text(row, "node_id", fail), addresses=f.texts(row, "addresses", fail),
        mesh_port=f.integer(row, "mesh_port", fail), aet=f.text(row, "aet", fail, ""),
        dicom_port=f.integer(row, "dicom_port", fail, 0),
    )


class Prober:
    """Probes due members and static peers, takes in what they answer, answers theirs."""

    def __init__(
        self, settings: DiscoverySettings, table: PeerTable,
        view: Callable[[], RosterView | None], client: Callable[[], MeshClient | None],
        mesh_hash: Callable[[], str | None], spawn: Callable[[str, Awaitable[None]], None],
        pull_roster: Callable[[str, int, str], Awaitable[None]], wake: Callable[[], None],
        store: PeerStore | None, wall: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._table = table
        self._view = view
        self._client = client
        self._mesh_hash = mesh_hash
        self._spawn = spawn
        self._pull_roster = pull_roster
        self._wake = wake
        self._store = store
        self._wall = wall
        self._static_ids: dict[tuple[str, int], str] = {}

    async def load_persisted(self) -> None:
        """Hints from the peers persisted by an earlier run."""
        if self._store is None:
            return
        for row in await self._store.load():
            try:
                peer = _persisted(row)
            except _Unusable:
                continue
            self._table.hint(peer.node_id, peer.addresses, peer.mesh_port, "persisted",
                             aet=peer.aet, dicom_port=peer.dicom_port)

    def round(self) -> None:
        """Apply timeouts, and probe every member and static peer that is due."""
        for change in self._table.tick():
            log.info("peer %s: %s -> %s", change.node_id[:15], change.old.value,
                     change.new.value)
        for peer in self._table.due_for_probe():
            self._spawn(peer.node_id, self._probe_peer(peer))
        for host, port in self._settings.static_peers:
            if (host, port) not in self._static_ids:
                self._spawn(f"static:{host}:{port}", self._probe_static(host, port))

    def introduction(self) -> Introduction:
        s = self._settings
        return Introduction(s.identity.node_id, s.mesh_port, s.aet, s.dicom_port)

    async def ask(self, address: str, port: int, expect: str | None = None) -> Hello:
        """Hello from ``expect`` (proven by the handshake), or from any member if None."""
        client, view = self._client(), self._view()
        if client is None or view is None:
            raise ProbeFailed("not a member")
        data = await client.call("GET", address, port, HELLO_PATH,
                                 self._settings.liveness.probe_timeout, expect,
                                 params=self.introduction().to_query())
        try:
            hello = Hello.from_json(data)
        except RemoteAnswerInvalid as exc:
            raise ProbeFailed(str(exc)) from None
        if expect is not None and hello.node_id != expect:
            raise ProbeFailed(f"{address}:{port} claims to be another node")
        if not view.is_member(hello.node_id):
            raise ProbeFailed(f"{address}:{port} is not a member of our mesh")
        if hello.roster_digest and hello.roster_digest != view.digest:
            self._spawn(f"roster:{hello.node_id}", self._pull_roster(address, port,
                                                                     hello.node_id))
        return hello

    async def _probe_static(self, host: str, port: int) -> None:
        try:
            hello = await self.ask(host, port)
        except ProbeFailed as exc:
            log.debug("static peer %s:%d: %s", host, port, exc)
            return
        self._static_ids[(host, port)] = hello.node_id
        self._table.hint(hello.node_id, [host], port, "static", hello.aet, hello.dicom_port)
        await self._accept(hello, host)

    async def _probe_peer(self, peer: Peer) -> None:
        self._table.probe_started(peer.node_id)
        for address in peer.addresses:
            try:
                hello = await self.ask(address, peer.mesh_port, expect=peer.node_id)
            except ProbeFailed as exc:
                log.debug("probe %s at %s: %s", peer.node_id[:15], address, exc)
                continue
            await self._accept(hello, address)
            return

    async def _accept(self, hello: Hello, address: str) -> None:
        change = self._table.probe_succeeded(hello.node_id, address, hello.aet,
                                             hello.dicom_port)
        if change is not None:
            log.info("peer %s (%s) at %s: %s -> alive", hello.node_id[:15], hello.aet,
                     address, change.old.value)
            await self._persist(hello.node_id)
        view = self._view()
        for item in hello.peers:
            if view is not None and view.is_member(item.node_id):
                self._table.hint(item.node_id, item.addresses, item.mesh_port, "exchange",
                                 aet=item.aet, dicom_port=item.dicom_port)

    async def _persist(self, node_id: str) -> None:
        peer = self._table.peers.get(node_id)
        if self._store is None or peer is None:
            return
        try:
            await self._store.save(node_id, {
                "node_id": peer.node_id, "aet": peer.aet, "addresses": list(peer.addresses),
                "mesh_port": peer.mesh_port, "dicom_port": peer.dicom_port,
                "last_seen": self._wall(),
            })
        except Exception as exc:  # a full disk must not stop liveness
            log.warning("could not persist peer %s: %s", node_id[:15], exc)

    # --- what members ask us -------------------------------------------------------------

    def hello(self) -> Hello:
        """Our answer to a probe: who we are, and the peers we know (peer exchange)."""
        s, view = self._settings, self._view()
        known = tuple(
            PeerInfo(p.node_id, p.addresses, p.mesh_port, p.aet, p.dicom_port)
            for p in self._table.snapshot() if p.state is not PeerState.DEAD and p.addresses
        )
        return Hello(s.identity.node_id, s.aet, self._mesh_hash() or "", s.mesh_port,
                     s.dicom_port, view.digest if view else "", known)

    async def hello_handler(self, request: web.Request) -> web.Response:
        if request.remote and request.query.get("node_id") == request["peer"]:
            # The prober told us how to reach it back: a hint like any other.
            try:
                them = Introduction.from_query(request.query)
            except RemoteAnswerInvalid:
                them = None
            if them is not None:
                self._table.hint(them.node_id, [request.remote], them.mesh_port, "inbound",
                                 aet=them.aet, dicom_port=them.dicom_port)
                self._wake()
        return web.json_response(self.hello().to_json())
