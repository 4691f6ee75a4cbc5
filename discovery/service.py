"""Discovery and membership as a running service: a thin front composing the parts.

mDNS, static peers and peer exchange give hints; liveness comes from probes over the
mesh API (HTTPS with mutual TLS on the mesh port); the roster says who may take part.
A node not yet in a mesh but given an invite token joins through the first member it
reaches. Last-known peer addresses persist, so a restarted node re-contacts its peers.

The parts, one job each: ``mesh_server`` and ``mesh_client`` (the mesh API and its TLS
contexts), ``probe`` (liveness), ``roster_sync``, ``admission`` (joiners), ``join`` (this
node joining), ``devices`` (the DICOM device directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from discovery.admission import Admission, JoinObserver
from discovery.devices import DeviceDirectory
from discovery.errors import DiscoveryError, ProbeFailed, StartFailed
from discovery.invite import Invite, InviteError, parse_invite
from discovery.join import JoinClient, Joining
from discovery.mdns import Announcement, MdnsAgent
from discovery.membership import MembershipError, MembershipStore
from discovery.mesh_client import MeshClient
from discovery.mesh_server import MeshRefusalObserver, MeshServer
from discovery.peers import Clock, PeerState, PeerTable
from discovery.probe import PeerStore, Prober
from discovery.records import DicomRecord, MeshRecord, loses_aet_tie, mesh_hash
from discovery.roster import Roster, RosterView
from discovery.roster_sync import REQUEST_SECONDS, RosterSync
from discovery.settings import DiscoverySettings
from discovery.wire import HELLO_PATH, JOIN_PATH, ROSTER_PATH
from node.tasks import cancel_and_wait

# Importable from here, as before the split (node/app.py, replication/, benchmarks/).
__all__ = ["LOOP_INTERVAL", "REQUEST_SECONDS", "Discovery", "DiscoveryError",
           "DiscoverySettings", "JoinObserver", "MeshRefusalObserver", "NotAMember",
           "PeerStore"]

log = logging.getLogger(__name__)
ADDRESS_CHECK_INTERVAL = 3.0
ROSTER_CHECK_INTERVAL = 1.0
LOOP_INTERVAL = 0.2


class NotAMember(StartFailed):
    """The roster on disk does not (or no longer) count this node as a member."""


@dataclass(frozen=True)
class _Member:
    """What a node has only while it is a member: its roster and the mesh API."""

    sync: RosterSync
    client: MeshClient
    server: MeshServer
    admission: Admission


class Discovery:
    def __init__(
        self, settings: DiscoverySettings, membership: MembershipStore,
        store: PeerStore | None = None, clock: Clock = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.node_id = settings.identity.node_id
        self.membership = membership
        self.table = PeerTable(self.node_id, clock, settings.liveness)
        self.directory = DeviceDirectory(settings.aet)
        # Told of every join this node decides: (admitted, node id, AET, address, why).
        # The composition root points it at the audit trail.
        self.on_join: JoinObserver = lambda *_: None
        self.on_refusal: MeshRefusalObserver = lambda *_: None
        self.invite: Invite | None = None
        self._member: _Member | None = None
        self._joining: Joining | None = None
        self._clock = clock
        self._wall = wall
        self._mdns: MdnsAgent | None = None
        self._extra_routes: list[web.RouteDef] = []
        self._task: asyncio.Task[None] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._join_candidates: dict[str, tuple[tuple[str, ...], int]] = {}
        self._warned: set[str] = set()
        self._wake = asyncio.Event()  # a new hint: act now rather than at the next tick
        self._prober = Prober(
            settings, self.table, lambda: self.view,
            lambda: None if self._member is None else self._member.client,
            lambda: self.mesh_hash, self._spawn, self._pull_roster, self._wake.set, store,
            wall,
        )

    # --- state ---------------------------------------------------------------------------

    @property
    def roster(self) -> Roster | None:
        return None if self._member is None else self._member.sync.roster

    @property
    def view(self) -> RosterView | None:
        return None if self._member is None else self._member.sync.view

    @property
    def devices(self) -> dict[str, DicomRecord]:
        return self.directory.devices

    @property
    def is_member(self) -> bool:
        return self.view is not None and self.view.is_member(self.node_id)

    @property
    def mesh_hash(self) -> str | None:
        if self.roster is not None:
            return mesh_hash(self.roster.mesh_id)
        return mesh_hash(self.invite.mesh_id) if self.invite is not None else None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        try:
            roster = await asyncio.to_thread(self.membership.load)
        except MembershipError as exc:
            raise StartFailed(str(exc)) from None
        if roster is None and s.join_token:
            try:
                self.invite = parse_invite(s.join_token)
            except InviteError as exc:
                raise StartFailed(f"cannot join: {exc}") from None
            if self._wall() > self.invite.expires:
                raise StartFailed("cannot join: the invite token has expired")
            self._joining = Joining(
                JoinClient(s.identity, s.aet, s.join_token, self.invite, REQUEST_SECONDS),
                self._clock, self._join_targets, self._joined,
                lambda *event: self.on_join(*event), wall=self._wall,
            )
        await self._prober.load_persisted()
        if roster is not None:
            try:
                await self._become_member(roster)
            except NotAMember as exc:
                # A revoked node still serves its own modalities and viewers, alone.
                log.error("%s: working alone, without the mesh", exc)
        elif self.invite is None:
            log.info("this node is in no mesh: it works alone (pacsmesh mesh init, or --join)")
        await self._start_mdns()
        self._task = asyncio.create_task(self._run(), name="discovery")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for task in list(self._tasks.values()):
            task.cancel()
        if self._mdns is not None:
            await self._mdns.stop()
            self._mdns = None
        if self._member is not None:
            await self._member.server.stop()
            await self._member.client.close()

    async def _start_mdns(self) -> None:
        s = self.settings
        if not s.mdns:
            return
        fixed = () if s.bind == "0.0.0.0" else (s.bind,)
        mesh = None
        if self.is_member and self.mesh_hash is not None:
            mesh = MeshRecord(
                node_id=self.node_id, mesh_hash=self.mesh_hash, mesh_port=s.mesh_port,
                dicom_port=s.dicom_port, aet=s.aet, addresses=fixed,
            )
        self._mdns = MdnsAgent(
            Announcement(
                DicomRecord(s.aet, s.device_type, s.dicom_port, fixed, tls=s.dicom_tls), mesh
            ),
            self._on_mesh_record, self.directory.announced, self.directory.removed,
            s.interfaces, host_label=self.node_id,
        )
        await self._mdns.start()

    async def _become_member(self, roster: Roster) -> None:
        view = roster.evaluate()
        if not view.is_member(self.node_id):
            state = "revoked" if self.node_id in view.revoked else "not a member"
            raise NotAMember(f"this node is {state} in the mesh of its roster")
        s = self.settings
        certs = [m.cert_pem for m in view.members.values()]
        server = MeshServer(s.identity, certs, lambda: self.view,
                            lambda *refusal: self.on_refusal(*refusal), self._clock)
        client = MeshClient(s.identity, certs, lambda: self.view)

        def trust(cert_pems: list[str]) -> None:
            server.trust(cert_pems)
            client.trust(cert_pems)

        sync = RosterSync(self.node_id, roster, view, self.membership, self.table, trust,
                          client.forget)
        admission = Admission(self.node_id, s.identity.private_key(), sync,
                              lambda *event: self.on_join(*event), self._wall)
        self._member = _Member(sync, client, server, admission)
        await server.start(s.bind, s.mesh_port, [
            web.get(HELLO_PATH, self._prober.hello_handler),
            web.get(ROSTER_PATH, sync.handler),
            web.post(JOIN_PATH, admission.handler),
            *self._extra_routes,
        ])
        log.info("member of mesh %s with %d member(s); mesh API on port %d",
                 self.mesh_hash, len(view.members), s.mesh_port)

    def add_mesh_routes(self, routes: list[web.RouteDef]) -> None:
        """Endpoints other parts of the node serve to members (call before start).

        Only members get through; ``request["peer"]`` holds the caller's node id."""
        self._extra_routes += routes

    # --- what the rest of the node asks --------------------------------------------------

    async def ask_member(
        self, node_id: str, method: str, path: str, *, params: dict[str, str] | None = None,
        body: Any = None, data: bytes | AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None, seconds: float = REQUEST_SECONDS,
    ) -> Any:
        """One request to a member at its best-known address, proven by the handshake."""
        peer = self.table.peers.get(node_id)
        if self._member is None or peer is None or not peer.addresses:
            raise ProbeFailed(f"no known address for {node_id[:15]}")
        return await self._member.client.call(
            method, peer.addresses[0], peer.mesh_port, path, seconds, node_id,
            params=params, body=body, data=data, headers=headers,
        )

    async def stream_from_member(
        self, node_id: str, path: str, sink: Callable[[bytes], Awaitable[None]],
        seconds: float, headers: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """A GET from a member whose body is handed to ``sink`` as it arrives."""
        peer = self.table.peers.get(node_id)
        if self._member is None or peer is None or not peer.addresses:
            raise ProbeFailed(f"no known address for {node_id[:15]}")
        return await self._member.client.stream(peer.addresses[0], peer.mesh_port, path,
                                                seconds, node_id, sink, headers=headers)

    def members(self) -> list[str]:
        """Node ids of the roster's members (not who is online this minute)."""
        view = self.view
        return [] if view is None else [n for n in view.members if view.is_member(n)]

    def is_alive(self, node_id: str) -> bool:
        peer = self.table.peers.get(node_id)
        return peer is not None and peer.state is PeerState.ALIVE

    def hello(self) -> dict[str, Any]:
        """Our answer to a probe: who we are, and the peers we know (peer exchange)."""
        return self._prober.hello().to_json()

    def introduction(self) -> dict[str, str]:
        return self._prober.introduction().to_query()

    def peers_json(self) -> list[dict[str, Any]]:
        """The peer table for people: times as UTC wall-clock times and ages."""
        now, wall = self._clock(), self._wall()

        def stamp(t: float | None) -> str | None:
            if t is None:
                return None
            return datetime.fromtimestamp(wall - (now - t), UTC).isoformat(timespec="seconds")

        out = []
        for peer in self.table.snapshot():
            item = peer.as_json()
            item["first_seen"] = stamp(peer.first_seen)
            item["last_seen"] = stamp(peer.last_seen)
            item["last_seen_seconds_ago"] = (
                round(now - peer.last_seen, 1) if peer.last_seen is not None else None
            )
            out.append(item)
        return out

    def to_wall(self, t: float) -> float:
        """A peer-table time (the liveness clock) as epoch seconds."""
        return self._wall() - (self._clock() - t)

    def known_aets(self) -> set[str]:
        """AE titles of the roster's members and of DICOM devices announcing themselves."""
        return self.directory.known_aets(self.view)

    def member_endpoints(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(AE title, node id, known addresses) of every other member of the roster.

        Safe from other threads: it copies what it reads."""
        view = self.view
        if view is None:
            return []
        peers = dict(self.table.peers)
        return [(m.aet, nid, peers[nid].addresses if nid in peers else ())
                for nid, m in list(view.members.items())
                if nid != self.node_id and view.is_member(nid)]

    def dicom_destination(self, aet: str) -> tuple[str, int] | None:
        """Where a DICOM device announcing ``aet`` can be reached, if one does."""
        return self.directory.destination(aet, self.table.alive())

    # --- hints ---------------------------------------------------------------------------

    def _on_mesh_record(self, record: MeshRecord) -> None:
        if record.node_id == self.node_id or record.mesh_hash != self.mesh_hash:
            return
        if not self.is_member:
            known = self._join_candidates.get(record.node_id)
            self._join_candidates[record.node_id] = (record.addresses, record.mesh_port)
            if known != (record.addresses, record.mesh_port) and self._joining is not None:
                self._joining.schedule.nudge()
            self._wake.set()
            return
        if record.aet == self.settings.aet and record.aet not in self._warned:
            self._warned.add(record.aet)
            log.warning(
                "node %s also uses AE title %s: give one of them another --aet",
                record.node_id[:15], record.aet,
            )
            if self._mdns is not None and loses_aet_tie(self.node_id, record.node_id):
                self._spawn("rename", self._mdns.rename_dicom_record())
        self.table.hint(
            record.node_id, record.addresses, record.mesh_port, "mdns",
            aet=record.aet, dicom_port=record.dicom_port,
        )
        self._wake.set()

    # --- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        next_address_check = self._clock() + ADDRESS_CHECK_INTERVAL
        next_roster_check = self._clock() + ROSTER_CHECK_INTERVAL
        while True:
            now = self._clock()
            if self.is_member and self._member is not None:
                self._prober.round()
                if now >= next_roster_check:
                    next_roster_check = now + ROSTER_CHECK_INTERVAL
                    await self._member.sync.reload_file()
            elif self._joining is not None and self.roster is None and self._joining.due():
                self._spawn("join", self._joining.round())
            if self._mdns is not None and now >= next_address_check:
                next_address_check = now + ADDRESS_CHECK_INTERVAL
                try:
                    await self._mdns.refresh_addresses()
                except Exception as exc:  # a vanished interface must not stop discovery
                    log.warning("could not re-announce new addresses: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), LOOP_INTERVAL)

    def _spawn(self, key: str, coro: Awaitable[None]) -> None:
        running = self._tasks.get(key)
        if running is not None and not running.done():
            coro.close()  # type: ignore[attr-defined]
            return
        self._tasks[key] = asyncio.ensure_future(coro)

    async def _pull_roster(self, address: str, port: int, node_id: str) -> None:
        if self._member is not None:
            await self._member.sync.pull(self._member.client, address, port, node_id)

    # --- joining -------------------------------------------------------------------------

    def join_status(self) -> dict[str, object] | None:
        """Where joining stands (None when this node holds no invite)."""
        return None if self._joining is None else self._joining.schedule.as_json()

    def _join_targets(self) -> list[tuple[str, int]]:
        assert self.invite is not None
        candidates: list[tuple[str, int]] = []
        for seed in self.invite.seeds:
            host, _, port_text = seed.rpartition(":")
            with contextlib.suppress(ValueError):  # a seed without a port: not a target
                candidates.append((host, int(port_text)))
        candidates += list(self.settings.static_peers)
        for addresses, port in self._join_candidates.values():
            candidates += [(a, port) for a in addresses]
        for peer in self.table.snapshot():  # persisted from an earlier membership
            candidates += [(a, peer.mesh_port) for a in peer.addresses]
        return list(dict.fromkeys(candidates))

    async def _joined(self, roster: Roster, host: str, port: int) -> None:
        await asyncio.to_thread(self.membership.merge, roster)
        await self._become_member(roster)
        assert self.view is not None
        self.table.hint(self.view.members[self.node_id].admitted_by, [host], port, "join")
        if self._mdns is not None:  # announce the mesh record now that we are a member
            await self._mdns.stop()
            await self._start_mdns()
        log.info("joined mesh %s through %s:%d", self.mesh_hash, host, port)
