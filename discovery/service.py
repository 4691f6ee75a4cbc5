"""Discovery and membership as a running service.

mDNS, static peers and peer exchange give hints; liveness comes from probes over the
mesh API (HTTPS with mutual TLS on the mesh port); the roster says who may take part.
A node not yet in a mesh but given an invite token joins through the first member it
reaches. Last-known peer addresses persist, so a restarted node re-contacts its peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from discovery.invite import Invite, InviteError, parse_invite, unb64
from discovery.join import JoinClient, Joining
from discovery.join import join_proof_payload as _join_proof_payload
from discovery.mdns import Announcement, MdnsAgent, interface_addresses
from discovery.membership import MembershipError, MembershipStore
from discovery.peers import Clock, Liveness, Peer, PeerState, PeerTable
from discovery.probe import HELLO_PATH, JOIN_PATH, ROSTER_PATH, Hello, ProbeFailed, call, stream
from discovery.records import (
    PROTOCOL_VERSION,
    DicomRecord,
    MeshRecord,
    loses_aet_tie,
    mesh_hash,
)
from discovery.refusal_limit import RefusalLimiter
from discovery.roster import Roster, RosterError, RosterView
from discovery.tls import (
    client_context,
    member_context,
    peer_node_id,
    server_context,
    trust,
)
from discovery.tls_gate import serve_tls
from node.identity import NodeIdentity, node_id_for
from node.tasks import cancel_and_wait

log = logging.getLogger(__name__)
ADDRESS_CHECK_INTERVAL = 3.0
ROSTER_CHECK_INTERVAL = 1.0
LOOP_INTERVAL = 0.2
REQUEST_SECONDS = 5.0


class DiscoveryError(RuntimeError):
    """Discovery cannot start as configured; the message is one line."""


class NotAMember(DiscoveryError):
    """The roster on disk does not (or no longer) count this node as a member."""


@dataclass(frozen=True)
class DiscoverySettings:
    identity: NodeIdentity
    aet: str
    mesh_port: int
    dicom_port: int
    device_type: str = "WSD"
    mdns: bool = True
    bind: str = "0.0.0.0"
    interfaces: tuple[str, ...] = ()
    static_peers: tuple[tuple[str, int], ...] = ()
    join_token: str | None = None
    dicom_tls: bool = False  # the DICOM port speaks TLS: announce _dicom-tls._tcp
    liveness: Liveness = field(default_factory=Liveness)


class PeerStore:
    """Where last-known peers persist (the composition root backs it with the index)."""

    def __init__(
        self,
        load: Callable[[], Awaitable[list[dict[str, Any]]]],
        save: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.load = load
        self.save = save


JoinObserver = Callable[[bool, str, str, str, str], None]
# Told of refused mesh connections, at most one per address a minute: (address, node id
# of the certificate or "", why; with how many more were refused and not told).
MeshRefusalObserver = Callable[[str, str, str], None]


class Discovery:
    def __init__(
        self, settings: DiscoverySettings, membership: MembershipStore,
        store: PeerStore | None = None, clock: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self.node_id = settings.identity.node_id
        self.membership = membership
        self.table = PeerTable(self.node_id, clock, settings.liveness)
        self.devices: dict[str, DicomRecord] = {}  # other DICOM devices, by instance name
        # Told of every join this node decides: (admitted, node id, AET, address, why).
        # The composition root points it at the audit trail.
        self.on_join: JoinObserver = lambda *_: None
        self.on_refusal: MeshRefusalObserver = lambda *_: None
        self._refusals = RefusalLimiter(clock=clock)
        self.roster: Roster | None = None
        self.view: RosterView | None = None
        self.invite: Invite | None = None
        self._joining: Joining | None = None
        self._store = store
        self._clock = clock
        self._key = settings.identity.private_key()
        self._mdns: MdnsAgent | None = None
        self._session: aiohttp.ClientSession | None = None
        self._server_ctx: ssl.SSLContext | None = None
        self._client_ctx: ssl.SSLContext | None = None  # any member
        self._member_ctx: dict[str, ssl.SSLContext] = {}  # exactly that member
        self._trusted: set[str] = set()
        self._mesh_runner: web.AppRunner | None = None
        self._mesh_server: asyncio.Server | None = None
        self._extra_routes: list[web.RouteDef] = []
        self._task: asyncio.Task[None] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._static_ids: dict[tuple[str, int], str] = {}
        self._join_candidates: dict[str, tuple[tuple[str, ...], int]] = {}
        self._warned: set[str] = set()
        self._roster_mtime = 0.0
        # One roster write at a time: concurrent admissions each persist their entry.
        self._persisting = asyncio.Lock()
        self._wake = asyncio.Event()  # a new hint: act now rather than at the next tick

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def is_member(self) -> bool:
        return self.view is not None and self.view.is_member(self.node_id)

    @property
    def mesh_hash(self) -> str | None:
        if self.roster is not None:
            return mesh_hash(self.roster.mesh_id)
        return mesh_hash(self.invite.mesh_id) if self.invite is not None else None

    async def start(self) -> None:
        s = self.settings
        try:
            roster = await asyncio.to_thread(self.membership.load)
        except MembershipError as exc:
            raise DiscoveryError(str(exc)) from None
        if roster is None and s.join_token:
            try:
                self.invite = parse_invite(s.join_token)
            except InviteError as exc:
                raise DiscoveryError(f"cannot join: {exc}") from None
            if time.time() > self.invite.expires:
                raise DiscoveryError("cannot join: the invite token has expired")
            self._joining = Joining(
                JoinClient(s.identity, s.aet, s.join_token, self.invite, REQUEST_SECONDS),
                self._clock, self._join_targets, self._joined,
                lambda *event: self.on_join(*event),
            )
        if self._store is not None:
            for row in await self._store.load():
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    self.table.hint(
                        str(row["node_id"]), row["addresses"], int(row["mesh_port"]),
                        "persisted", aet=str(row.get("aet", "")),
                        dicom_port=int(row.get("dicom_port", 0)),
                    )
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
        if self._mesh_server is not None:
            self._mesh_server.close()
            self._mesh_server = None
        if self._mesh_runner is not None:
            await self._mesh_runner.cleanup()
            self._mesh_runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

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
            self._on_mesh_record, self._on_dicom_record, self._on_dicom_removed, s.interfaces,
            host_label=self.node_id,
        )
        await self._mdns.start()

    async def _become_member(self, roster: Roster) -> None:
        view = roster.evaluate()
        if not view.is_member(self.node_id):
            state = "revoked" if self.node_id in view.revoked else "not a member"
            raise NotAMember(f"this node is {state} in the mesh of its roster")
        self.roster, self.view = roster, view
        self._report_rejected(view)
        certs = [m.cert_pem for m in view.members.values()]
        self._trusted = set(view.members)
        self._server_ctx = server_context(self.settings.identity, certs)
        self._client_ctx = client_context(self.settings.identity, certs)
        self._session = aiohttp.ClientSession()
        self._roster_mtime = self.membership.mtime()
        await self._start_mesh_api()
        log.info("member of mesh %s with %d member(s); mesh API on port %d",
                 self.mesh_hash, len(view.members), self.settings.mesh_port)

    async def _start_mesh_api(self) -> None:
        # Objects travel through this API: no small request-size cap.
        app = web.Application(middlewares=[self._authenticate], client_max_size=2**34)
        app.router.add_get(HELLO_PATH, self._hello_handler)
        app.router.add_get(ROSTER_PATH, self._roster_handler)
        app.router.add_post(JOIN_PATH, self._join_handler)
        app.router.add_routes(self._extra_routes)
        self._mesh_runner = web.AppRunner(app, access_log=None)
        await self._mesh_runner.setup()
        assert self._mesh_runner.server is not None and self._server_ctx is not None
        try:
            self._mesh_server = await serve_tls(
                self._mesh_runner.server, self.settings.bind, self.settings.mesh_port,
                self._server_ctx, "mesh API",
                on_refused=lambda address, why: self._refused(address, "", why),
            )
        except OSError as exc:
            raise DiscoveryError(
                f"cannot listen for the mesh on {self.settings.bind}:{self.settings.mesh_port}:"
                f" {exc.strerror}"
            ) from None

    def add_mesh_routes(self, routes: list[web.RouteDef]) -> None:
        """Endpoints other parts of the node serve to members (call before start).

        Only members get through; ``request["peer"]`` holds the caller's node id."""
        self._extra_routes += routes

    async def ask_member(
        self, node_id: str, method: str, path: str, *, params: dict[str, str] | None = None,
        body: Any = None, data: bytes | AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None, seconds: float = REQUEST_SECONDS,
    ) -> Any:
        """One request to a member at its best-known address, proven by the handshake."""
        peer = self.table.peers.get(node_id)
        if self._session is None or peer is None or not peer.addresses:
            raise ProbeFailed(f"no known address for {node_id[:15]}")
        return await call(self._session, method, peer.addresses[0], peer.mesh_port, path,
                          seconds, self._context_for(node_id), params=params, body=body,
                          data=data, headers=headers)

    async def stream_from_member(
        self, node_id: str, path: str, sink: Callable[[bytes], Awaitable[None]],
        seconds: float, headers: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """A GET from a member whose body is handed to ``sink`` as it arrives."""
        peer = self.table.peers.get(node_id)
        if self._session is None or peer is None or not peer.addresses:
            raise ProbeFailed(f"no known address for {node_id[:15]}")
        return await stream(self._session, peer.addresses[0], peer.mesh_port, path, seconds,
                            self._context_for(node_id), sink, headers=headers)

    def members(self) -> list[str]:
        """Node ids of the roster's members (not who is online this minute)."""
        return [] if self.view is None else [
            n for n in self.view.members if self.view.is_member(n)
        ]

    def is_alive(self, node_id: str) -> bool:
        peer = self.table.peers.get(node_id)
        return peer is not None and peer.state is PeerState.ALIVE

    # --- roster ----------------------------------------------------------------------------

    async def _apply_roster(self, incoming: Roster | None, persist: bool = True) -> None:
        """Merge entries into our roster, persist, and refresh trust and the peer table."""
        if self.roster is None:
            return
        if incoming is not None:
            if (incoming.mesh_id, incoming.admin_key) != (self.roster.mesh_id,
                                                          self.roster.admin_key):
                log.warning("ignored a roster of another mesh")
                return
            if not self.roster.merge(incoming.entries):
                return
        view = self.roster.evaluate()
        self._report_rejected(view)
        new_certs = [m.cert_pem for nid, m in view.members.items() if nid not in self._trusted]
        for ctx in (self._server_ctx, self._client_ctx):
            if ctx is not None and new_certs:
                trust(ctx, new_certs)
        self._trusted |= set(view.members)
        for node_id in view.revoked:
            self._member_ctx.pop(node_id, None)
            if self.table.peers.pop(node_id, None) is not None:
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
            await self._persist_roster()

    async def _persist_roster(self) -> None:
        """Write our roster's entries to the file, and take in those only the file has (the
        CLI may have added some). The in-memory roster is merged into, never replaced:
        entries admitted while the file was being written must not be lost from memory."""
        assert self.roster is not None
        async with self._persisting:
            snapshot = Roster(self.roster.mesh_id, self.roster.admin_key,
                              list(self.roster.entries))
            try:
                on_disk = await asyncio.to_thread(self.membership.merge, snapshot)
                self._roster_mtime = self.membership.mtime()
            except (OSError, MembershipError) as exc:
                log.warning("could not save the roster: %s", exc)
                return
        if self.roster.merge(on_disk.entries):
            await self._apply_roster(None, persist=False)

    def _report_rejected(self, view: RosterView) -> None:
        for sig, reason in view.rejected:
            if sig not in self._warned:
                self._warned.add(sig)
                log.warning("roster entry %s ignored (tampered or forged?): %s", sig[:8], reason)

    async def _reload_roster_file(self) -> None:
        mtime = self.membership.mtime()
        if mtime == self._roster_mtime:
            return
        self._roster_mtime = mtime
        try:
            on_disk = await asyncio.to_thread(self.membership.load)
        except MembershipError as exc:
            log.warning("%s", exc)
            return
        if on_disk is not None:
            await self._apply_roster(on_disk, persist=False)

    # --- what others ask us --------------------------------------------------------------

    @web.middleware
    async def _authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        transport = request.transport
        peer = peer_node_id(transport.get_extra_info("ssl_object")) if transport else None
        if request.path == JOIN_PATH:
            return await handler(request)
        if peer is None or self.view is None or not self.view.is_member(peer):
            reason = "no certificate" if peer is None else (
                "revoked" if self.view and peer in self.view.revoked else "not a member")
            log.warning("mesh API refused %s from %s (%s): %s", request.path,
                        request.remote, (peer or "-")[:15], reason)
            self._refused(request.remote or "", peer or "",
                          f"{reason} ({request.method} {request.path[:100]})")
            raise web.HTTPForbidden(text=f"refused: {reason}")
        request["peer"] = peer
        return await handler(request)

    def _refused(self, address: str, node_id: str, why: str) -> None:
        suppressed = self._refusals.admit(address)
        if suppressed is None:
            return  # counted; told with this address's next refusal a minute on
        if suppressed:
            why += (f"; {suppressed} more refusal(s) from this address since its last row,"
                    " not recorded")
        self.on_refusal(address, node_id, why)

    def hello(self) -> dict[str, Any]:
        """Our answer to a probe: who we are, and the peers we know (peer exchange)."""
        s = self.settings
        known = [
            {"node_id": p.node_id, "aet": p.aet, "addresses": list(p.addresses),
             "mesh_port": p.mesh_port, "dicom_port": p.dicom_port}
            for p in self.table.snapshot() if p.state is not PeerState.DEAD and p.addresses
        ]
        return {
            "node_id": self.node_id, "aet": s.aet, "mesh": self.mesh_hash,
            "protocol": PROTOCOL_VERSION, "mesh_port": s.mesh_port, "dicom_port": s.dicom_port,
            "roster": self.view.digest if self.view else "", "peers": known,
        }

    async def _hello_handler(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.remote and params.get("node_id") == request["peer"]:
            # The prober told us how to reach it back: a hint like any other.
            with contextlib.suppress(KeyError, ValueError):
                self.table.hint(
                    params["node_id"], [request.remote], int(params["mesh_port"]), "inbound",
                    aet=params.get("aet", ""), dicom_port=int(params.get("dicom_port", "0")),
                )
                self._wake.set()
        return web.json_response(self.hello())

    async def _roster_handler(self, request: web.Request) -> web.Response:
        assert self.roster is not None
        return web.json_response(self.roster.to_json())

    async def _join_handler(self, request: web.Request) -> web.Response:
        remote = request.remote
        try:
            body = await request.json()
            token, cert_pem, aet = str(body["token"]), str(body["cert"]), str(body["aet"])
            proof = unb64(str(body["proof"]))
            invite = parse_invite(token)
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
            joiner = node_id_for(cert.public_bytes(Encoding.DER))
            key = cert.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise InviteError("unsupported key type")
            key.verify(proof, _join_proof_payload(invite, joiner), ec.ECDSA(hashes.SHA256()))
            if self.roster is None or not self.is_member:
                raise RosterError("this node is not a member and cannot admit")
            self.roster.admit(self.node_id, self._key, cert_pem, aet, token, time.time())
        except (InviteError, RosterError) as exc:
            log.warning("mesh join from %s refused: %s", remote, exc)
            self.on_join(False, "", "", remote or "", str(exc))
            raise web.HTTPForbidden(text=f"join refused: {exc}") from None
        except (KeyError, TypeError, ValueError, InvalidSignature) as exc:
            log.warning("mesh join from %s refused: malformed request (%s)", remote, exc)
            self.on_join(False, "", "", remote or "", "malformed join request")
            raise web.HTTPBadRequest(text="malformed join request") from None
        await self._apply_roster(None)
        self.on_join(True, joiner, aet, remote or "", "admitted")
        log.info("admitted node %s (%s) from %s into the mesh", joiner[:15], aet, remote)
        return web.json_response({"roster": self.roster.to_json()})

    def peers_json(self) -> list[dict[str, Any]]:
        """The peer table for people: times as UTC wall-clock times and ages."""
        now, wall = self._clock(), time.time()

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

    def known_aets(self) -> set[str]:
        """AE titles of the roster's members and of DICOM devices announcing themselves."""
        titles = {record.aet for record in self.devices.values()}
        if self.view is not None:
            titles |= {m.aet for nid, m in self.view.members.items() if self.view.is_member(nid)}
        return {t for t in titles if t}

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
        for record in self.devices.values():
            if record.aet == aet and record.addresses:
                return record.addresses[0], record.port
        for peer in self.table.alive():
            if peer.aet == aet and peer.addresses and peer.dicom_port:
                return peer.addresses[0], peer.dicom_port
        return None

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

    def _on_dicom_record(self, name: str, record: DicomRecord) -> None:
        if record.aet == self.settings.aet and not set(record.addresses) & set(
            interface_addresses()
        ):
            log.warning("another DICOM device on this network announces AE title %s", record.aet)
        self.devices[name] = record

    def _on_dicom_removed(self, name: str) -> None:
        self.devices.pop(name, None)

    # --- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        next_address_check = self._clock() + ADDRESS_CHECK_INTERVAL
        next_roster_check = self._clock() + ROSTER_CHECK_INTERVAL
        while True:
            now = self._clock()
            if self.is_member:
                self._member_round()
                if now >= next_roster_check:
                    next_roster_check = now + ROSTER_CHECK_INTERVAL
                    await self._reload_roster_file()
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

    def _member_round(self) -> None:
        for change in self.table.tick():
            log.info("peer %s: %s -> %s", change.node_id[:15], change.old.value,
                     change.new.value)
        for peer in self.table.due_for_probe():
            self._spawn(peer.node_id, self._probe_peer(peer))
        for host, port in self.settings.static_peers:
            if (host, port) not in self._static_ids:
                self._spawn(f"static:{host}:{port}", self._probe_static(host, port))

    def _spawn(self, key: str, coro: Awaitable[None]) -> None:
        running = self._tasks.get(key)
        if running is not None and not running.done():
            coro.close()  # type: ignore[attr-defined]
            return
        self._tasks[key] = asyncio.ensure_future(coro)

    # --- joining -------------------------------------------------------------------------

    def join_status(self) -> dict[str, object] | None:
        """Where joining stands (None when this node holds no invite)."""
        return None if self._joining is None else self._joining.schedule.as_json()

    def _join_targets(self) -> list[tuple[str, int]]:
        assert self.invite is not None
        candidates: list[tuple[str, int]] = []
        for seed in self.invite.seeds:
            host, _, port = seed.rpartition(":")
            with contextlib.suppress(ValueError):
                candidates.append((host, int(port)))
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

    # --- probing -------------------------------------------------------------------------

    def introduction(self) -> dict[str, str]:
        s = self.settings
        return {"node_id": self.node_id, "aet": s.aet, "mesh_port": str(s.mesh_port),
                "dicom_port": str(s.dicom_port)}

    def _context_for(self, node_id: str | None) -> ssl.SSLContext:
        assert self.view is not None and self._client_ctx is not None
        if node_id is None:
            return self._client_ctx
        member = self.view.members.get(node_id)
        if member is None or not self.view.is_member(node_id):
            raise ProbeFailed(f"{node_id[:15]} is not a member of our mesh")
        ctx = self._member_ctx.get(node_id)
        if ctx is None:
            ctx = self._member_ctx[node_id] = member_context(
                self.settings.identity, member.cert_pem
            )
        return ctx

    async def _ask(self, address: str, port: int, expect: str | None = None) -> Hello:
        """Hello from ``expect`` (proven by the handshake), or from any member if None."""
        if self._session is None or self.view is None:
            raise ProbeFailed("not a member")
        data = await call(self._session, "GET", address, port, HELLO_PATH,
                          self.settings.liveness.probe_timeout, self._context_for(expect),
                          params=self.introduction())
        hello = Hello.from_json(data)
        if expect is not None and hello.node_id != expect:
            raise ProbeFailed(f"{address}:{port} claims to be another node")
        if not self.view.is_member(hello.node_id):
            raise ProbeFailed(f"{address}:{port} is not a member of our mesh")
        if hello.roster_digest and hello.roster_digest != self.view.digest:
            self._spawn(f"roster:{hello.node_id}", self._pull_roster(address, port,
                                                                     hello.node_id))
        return hello

    async def _pull_roster(self, address: str, port: int, node_id: str) -> None:
        assert self._session is not None
        try:
            data = await call(self._session, "GET", address, port, ROSTER_PATH,
                              REQUEST_SECONDS, self._context_for(node_id))
            await self._apply_roster(Roster.from_json(data))
        except (ProbeFailed, RosterError) as exc:
            log.debug("roster pull from %s:%d: %s", address, port, exc)

    async def _probe_static(self, host: str, port: int) -> None:
        try:
            hello = await self._ask(host, port)
        except ProbeFailed as exc:
            log.debug("static peer %s:%d: %s", host, port, exc)
            return
        self._static_ids[(host, port)] = hello.node_id
        self.table.hint(hello.node_id, [host], port, "static", hello.aet, hello.dicom_port)
        await self._accept(hello, host)

    async def _probe_peer(self, peer: Peer) -> None:
        self.table.probe_started(peer.node_id)
        for address in peer.addresses:
            try:
                hello = await self._ask(address, peer.mesh_port, expect=peer.node_id)
            except ProbeFailed as exc:
                log.debug("probe %s at %s: %s", peer.node_id[:15], address, exc)
                continue
            await self._accept(hello, address)
            return

    async def _accept(self, hello: Hello, address: str) -> None:
        change = self.table.probe_succeeded(hello.node_id, address, hello.aet, hello.dicom_port)
        if change is not None:
            log.info("peer %s (%s) at %s: %s -> alive", hello.node_id[:15], hello.aet,
                     address, change.old.value)
            await self._persist(hello.node_id)
        for item in hello.peers:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                node_id = str(item["node_id"])
                if self.view is not None and self.view.is_member(node_id):
                    self.table.hint(
                        node_id, [str(a) for a in item["addresses"]], int(item["mesh_port"]),
                        "exchange", aet=str(item.get("aet", "")),
                        dicom_port=int(item.get("dicom_port", 0)),
                    )

    async def _persist(self, node_id: str) -> None:
        peer = self.table.peers.get(node_id)
        if self._store is None or peer is None:
            return
        try:
            await self._store.save(node_id, {
                "node_id": peer.node_id, "aet": peer.aet, "addresses": list(peer.addresses),
                "mesh_port": peer.mesh_port, "dicom_port": peer.dicom_port,
                "last_seen": time.time(),
            })
        except Exception as exc:  # a full disk must not stop liveness
            log.warning("could not persist peer %s: %s", node_id[:15], exc)
