"""How discovery is configured: the composition root fills one in."""

from __future__ import annotations

from dataclasses import dataclass, field

from discovery.peers import Liveness
from node.identity import NodeIdentity


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
