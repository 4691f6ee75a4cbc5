"""Discovery as a running service: mDNS hints, static peers, peer exchange, probes.

Owns the peer table and decides liveness from probes alone; persists last-known
addresses through a small store so a restarted node re-contacts its peers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from discovery.mdns import Announcement, MdnsAgent, interface_addresses
from discovery.peers import Clock, Liveness, Peer, PeerState, PeerTable
from discovery.probe import Hello, ProbeFailed, probe
from discovery.records import (
    PROTOCOL_VERSION,
    DicomRecord,
    MeshRecord,
    loses_aet_tie,
    mesh_hash,
)

log = logging.getLogger(__name__)
ADDRESS_CHECK_INTERVAL = 3.0
LOOP_INTERVAL = 0.2


@dataclass(frozen=True)
class DiscoverySettings:
    node_id: str
    aet: str
    http_port: int
    dicom_port: int
    mesh_id: str = "default"
    device_type: str = "WSD"
    mdns: bool = True
    bind: str = "0.0.0.0"
    interfaces: tuple[str, ...] = ()
    static_peers: tuple[tuple[str, int], ...] = ()
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


class Discovery:
    def __init__(
        self, settings: DiscoverySettings, store: PeerStore | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self.mesh_hash = mesh_hash(settings.mesh_id)
        self.table = PeerTable(settings.node_id, clock, settings.liveness)
        self.devices: dict[str, DicomRecord] = {}  # other DICOM devices, by instance name
        self._store = store
        self._clock = clock
        self._mdns: MdnsAgent | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._probing: dict[str, asyncio.Task[None]] = {}
        self._static_ids: dict[tuple[str, int], str] = {}
        self._warned_aets: set[str] = set()
        self._wake = asyncio.Event()  # a new hint: probe now rather than at the next tick

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._session = aiohttp.ClientSession()
        if self._store is not None:
            for row in await self._store.load():
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    self.table.hint(
                        str(row["node_id"]), row["addresses"], int(row["http_port"]),
                        "persisted", aet=str(row.get("aet", "")),
                        dicom_port=int(row.get("dicom_port", 0)),
                    )
        if s.mdns:
            fixed = () if s.bind == "0.0.0.0" else (s.bind,)
            announcement = Announcement(
                dicom=DicomRecord(s.aet, s.device_type, s.dicom_port, fixed),
                mesh=MeshRecord(
                    node_id=s.node_id, mesh_hash=self.mesh_hash, http_port=s.http_port,
                    dicom_port=s.dicom_port, aet=s.aet, addresses=fixed,
                ),
            )
            self._mdns = MdnsAgent(
                announcement, self._on_mesh_record, self._on_dicom_record,
                self._on_dicom_removed, s.interfaces,
            )
        self._task = asyncio.create_task(self._run(), name="discovery")
        if self._mdns is not None:
            await self._mdns.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._probing.values()):
            task.cancel()
        if self._mdns is not None:
            await self._mdns.stop()
            self._mdns = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- what others ask us --------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """Our answer to a probe: who we are, and the peers we know (peer exchange)."""
        s = self.settings
        known = [
            {"node_id": p.node_id, "aet": p.aet, "addresses": list(p.addresses),
             "http_port": p.http_port, "dicom_port": p.dicom_port}
            for p in self.table.snapshot() if p.state is not PeerState.DEAD and p.addresses
        ]
        return {
            "node_id": s.node_id, "aet": s.aet, "mesh": self.mesh_hash,
            "protocol": PROTOCOL_VERSION, "http_port": s.http_port,
            "dicom_port": s.dicom_port, "peers": known,
        }

    def introduction(self) -> dict[str, str]:
        s = self.settings
        return {"node_id": s.node_id, "aet": s.aet, "mesh": self.mesh_hash,
                "http_port": str(s.http_port), "dicom_port": str(s.dicom_port)}

    def introduced(self, address: str, params: dict[str, str]) -> None:
        """A peer probed us and said who it is: a hint to probe it back."""
        if params.get("mesh") != self.mesh_hash:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.table.hint(
                params["node_id"], [address], int(params["http_port"]), "inbound",
                aet=params.get("aet", ""), dicom_port=int(params.get("dicom_port", "0")),
            )
            self._wake.set()

    def peers_json(self) -> list[dict[str, Any]]:
        now = self._clock()
        out = []
        for peer in self.table.snapshot():
            item = peer.as_json()
            item["last_seen_seconds_ago"] = (
                round(now - peer.last_seen, 1) if peer.last_seen is not None else None
            )
            del item["first_seen"], item["last_seen"]
            out.append(item)
        return out

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
        if record.node_id == self.settings.node_id or record.mesh_hash != self.mesh_hash:
            return
        if record.aet == self.settings.aet and record.aet not in self._warned_aets:
            self._warned_aets.add(record.aet)
            log.warning(
                "node %s also uses AE title %s: give one of them another --aet",
                record.node_id[:12], record.aet,
            )
            if self._mdns is not None and loses_aet_tie(self.settings.node_id, record.node_id):
                self._spawn("rename", self._mdns.rename_dicom_record())
        self.table.hint(
            record.node_id, record.addresses, record.http_port, "mdns",
            aet=record.aet, dicom_port=record.dicom_port,
        )
        self._wake.set()

    def _on_dicom_record(self, name: str, record: DicomRecord) -> None:
        own = {self.settings.aet}
        if record.aet in own and not self._is_own_address(record.addresses):
            log.warning("another DICOM device on this network announces AE title %s", record.aet)
        self.devices[name] = record

    def _on_dicom_removed(self, name: str) -> None:
        self.devices.pop(name, None)

    def _is_own_address(self, addresses: Sequence[str]) -> bool:
        return bool(set(addresses) & set(interface_addresses()))

    # --- probing -------------------------------------------------------------------------

    async def _run(self) -> None:
        next_address_check = self._clock() + ADDRESS_CHECK_INTERVAL
        while True:
            for change in self.table.tick():
                log.info("peer %s: %s -> %s", change.node_id[:12], change.old.value,
                         change.new.value)
            for peer in self.table.due_for_probe():
                self._spawn(peer.node_id, self._probe_peer(peer))
            for host, port in self.settings.static_peers:
                if (host, port) not in self._static_ids:
                    self._spawn(f"static:{host}:{port}", self._probe_static(host, port))
            if self._mdns is not None and self._clock() >= next_address_check:
                next_address_check = self._clock() + ADDRESS_CHECK_INTERVAL
                try:
                    await self._mdns.refresh_addresses()
                except Exception as exc:  # a vanished interface must not stop discovery
                    log.warning("could not re-announce new addresses: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), LOOP_INTERVAL)

    def _spawn(self, key: str, coro: Awaitable[None]) -> None:
        running = self._probing.get(key)
        if running is not None and not running.done():
            coro.close()  # type: ignore[attr-defined]
            return
        self._probing[key] = asyncio.ensure_future(coro)

    async def _ask(self, address: str, port: int) -> Hello:
        assert self._session is not None
        hello = await probe(
            self._session, address, port, self.settings.liveness.probe_timeout,
            self.introduction(),
        )
        if hello.mesh_hash != self.mesh_hash:
            raise ProbeFailed(f"{address}:{port} belongs to another mesh")
        return hello

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
                hello = await self._ask(address, peer.http_port)
            except ProbeFailed as exc:
                log.debug("probe %s at %s: %s", peer.node_id[:12], address, exc)
                continue
            if hello.node_id != peer.node_id:
                self.table.forget_address(peer.node_id, address)
                continue
            await self._accept(hello, address)
            return

    async def _accept(self, hello: Hello, address: str) -> None:
        change = self.table.probe_succeeded(hello.node_id, address, hello.aet, hello.dicom_port)
        if change is not None:
            log.info("peer %s (%s) at %s: %s -> alive", hello.node_id[:12], hello.aet,
                     address, change.old.value)
            await self._persist(hello.node_id)
        for item in hello.peers:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.table.hint(
                    str(item["node_id"]), [str(a) for a in item["addresses"]],
                    int(item["http_port"]), "exchange", aet=str(item.get("aet", "")),
                    dicom_port=int(item.get("dicom_port", 0)),
                )

    async def _persist(self, node_id: str) -> None:
        peer = self.table.peers.get(node_id)
        if self._store is None or peer is None:
            return
        try:
            await self._store.save(node_id, {
                "node_id": peer.node_id, "aet": peer.aet, "addresses": list(peer.addresses),
                "http_port": peer.http_port, "dicom_port": peer.dicom_port,
                "last_seen": time.time(),
            })
        except Exception as exc:  # a full disk must not stop liveness
            log.warning("could not persist peer %s: %s", node_id[:12], exc)
