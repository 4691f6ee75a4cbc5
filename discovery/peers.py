"""The peer table: who is out there, where, and whether they are alive.

Pure code with an injected clock. mDNS, static configuration and peer exchange only give
hints (an address to try); a peer is alive only while probes of it succeed, because mDNS
caches keep records of dead hosts for minutes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

Clock = Callable[[], float]


class PeerState(enum.Enum):
    UNKNOWN = "unknown"  # heard of, never answered a probe yet
    ALIVE = "alive"
    SUSPECT = "suspect"  # missed probes for a while
    DEAD = "dead"


@dataclass(frozen=True)
class Liveness:
    """Timing of probes and state changes, in seconds."""

    probe_interval: float = 1.0
    probe_timeout: float = 1.5
    suspect_after: float = 3.0  # since the last successful probe
    dead_after: float = 6.0
    dead_probe_interval: float = 5.0  # dead peers are still tried, less often


@dataclass(frozen=True)
class Peer:
    node_id: str
    aet: str = ""
    addresses: tuple[str, ...] = ()
    mesh_port: int = 0
    dicom_port: int = 0
    state: PeerState = PeerState.UNKNOWN
    first_seen: float = 0.0
    last_seen: float | None = None  # last successful probe
    last_probe: float | None = None
    sources: frozenset[str] = frozenset()  # mdns, static, exchange, persisted
    # When the state last changed (the dashboard's "dead since"); not persisted.
    state_since: float | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "aet": self.aet,
            "addresses": list(self.addresses),
            "mesh_port": self.mesh_port,
            "dicom_port": self.dicom_port,
            "state": self.state.value,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "sources": sorted(self.sources),
        }


@dataclass(frozen=True)
class StateChange:
    node_id: str
    old: PeerState
    new: PeerState


@dataclass
class PeerTable:
    self_id: str
    clock: Clock
    liveness: Liveness = field(default_factory=Liveness)
    peers: dict[str, Peer] = field(default_factory=dict)

    def hint(
        self,
        node_id: str,
        addresses: Iterable[str],
        mesh_port: int,
        source: str,
        aet: str = "",
        dicom_port: int = 0,
    ) -> Peer | None:
        """Learn (or refresh) where a peer might be. Returns None for ourselves."""
        if node_id == self.self_id:
            return None
        now = self.clock()
        addrs = tuple(dict.fromkeys(addresses))
        old = self.peers.get(node_id)
        if old is None:
            peer = Peer(
                node_id=node_id, aet=aet, addresses=addrs, mesh_port=mesh_port,
                dicom_port=dicom_port, first_seen=now, sources=frozenset({source}),
                state_since=now,
            )
        else:
            # A fresh hint's addresses go first (a DHCP renewal); older ones stay as fallbacks
            # until a probe proves which one answers.
            merged = tuple(dict.fromkeys(addrs + old.addresses)) if addrs else old.addresses
            peer = replace(
                old, aet=aet or old.aet, addresses=merged,
                mesh_port=mesh_port or old.mesh_port, dicom_port=dicom_port or old.dicom_port,
                sources=old.sources | {source},
            )
        self.peers[node_id] = peer
        return peer

    def due_for_probe(self) -> list[Peer]:
        now = self.clock()
        due = []
        for peer in self.peers.values():
            interval = (
                self.liveness.dead_probe_interval
                if peer.state is PeerState.DEAD else self.liveness.probe_interval
            )
            if peer.last_probe is None or now - peer.last_probe >= interval:
                due.append(peer)
        return due

    def probe_started(self, node_id: str) -> None:
        peer = self.peers.get(node_id)
        if peer is not None:
            self.peers[node_id] = replace(peer, last_probe=self.clock())

    def probe_succeeded(
        self, node_id: str, address: str, aet: str = "", dicom_port: int = 0
    ) -> StateChange | None:
        """A probe reached the peer at ``address``; that address goes first from now on."""
        peer = self.peers.get(node_id)
        if peer is None:
            return None
        addresses = (address, *(a for a in peer.addresses if a != address))
        now = self.clock()
        self.peers[node_id] = replace(
            peer, state=PeerState.ALIVE, last_seen=now, addresses=addresses,
            aet=aet or peer.aet, dicom_port=dicom_port or peer.dicom_port,
            state_since=peer.state_since if peer.state is PeerState.ALIVE else now,
        )
        return StateChange(node_id, peer.state, PeerState.ALIVE) if (
            peer.state is not PeerState.ALIVE) else None

    def forget_address(self, node_id: str, address: str) -> None:
        """Drop an address where a different node (or nothing of ours) answered."""
        peer = self.peers.get(node_id)
        if peer is not None and address in peer.addresses and len(peer.addresses) > 1:
            self.peers[node_id] = replace(
                peer, addresses=tuple(a for a in peer.addresses if a != address)
            )

    def tick(self) -> list[StateChange]:
        """Apply timeouts; return the state changes."""
        now = self.clock()
        changes = []
        for node_id, peer in list(self.peers.items()):
            reference = peer.last_seen if peer.last_seen is not None else peer.first_seen
            silent = now - reference
            new = peer.state
            if peer.state in (PeerState.ALIVE, PeerState.SUSPECT):
                if silent >= self.liveness.dead_after:
                    new = PeerState.DEAD
                elif silent >= self.liveness.suspect_after:
                    new = PeerState.SUSPECT
            elif peer.state is PeerState.UNKNOWN and silent >= self.liveness.dead_after:
                new = PeerState.DEAD
            if new is not peer.state:
                self.peers[node_id] = replace(peer, state=new, state_since=now)
                changes.append(StateChange(node_id, peer.state, new))
        return changes

    def alive(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.state is PeerState.ALIVE]

    def snapshot(self) -> list[Peer]:
        return sorted(self.peers.values(), key=lambda p: (p.aet, p.node_id))
