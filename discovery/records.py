"""DNS-SD records a node announces and reads (DICOM PS3.15 Annex H, plus a mesh record).

Pure code: dataclasses in, TXT properties out, and back. No patient data ever goes here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from discovery.errors import RemoteDiscoveryError

# TXT properties as zeroconf gives them (bytes) or as tests write them (text). A union of
# mappings, not a mapping of unions: Mapping is invariant in its key type.
TxtProperties = (Mapping[bytes, bytes | None] | Mapping[str, str | None]
                 | Mapping[bytes | str, bytes | str | None])

DICOM_TYPE = "_dicom._tcp.local."
DICOM_TLS_TYPE = "_dicom-tls._tcp.local."  # the same record for DIMSE over TLS
MESH_TYPE = "_pacsmesh._tcp.local."
TXT_VERSION = "1"
PROTOCOL_VERSION = 1
DEVICE_TYPES = ("ARCHIVE", "WSD")  # site server, workstation (PS3.15 H.4.2 examples)


class RecordError(RemoteDiscoveryError, ValueError):
    """A record that is not ours to use (malformed, other protocol)."""


@dataclass(frozen=True)
class DicomRecord:
    """``<name>._dicom._tcp.local.`` with TXT ``AET`` and ``PrimaryDeviceType``."""

    aet: str
    device_type: str
    port: int
    addresses: tuple[str, ...] = ()
    tls: bool = False

    @property
    def service_type(self) -> str:
        return DICOM_TLS_TYPE if self.tls else DICOM_TYPE

    def properties(self) -> dict[str, str]:
        return {"txtvers": TXT_VERSION, "AET": self.aet, "PrimaryDeviceType": self.device_type}


@dataclass(frozen=True)
class MeshRecord:
    """``<node>._pacsmesh._tcp.local.``: how to reach a node of the mesh. Never patient data."""

    node_id: str
    mesh_hash: str
    mesh_port: int
    dicom_port: int
    aet: str
    protocol: int = PROTOCOL_VERSION
    addresses: tuple[str, ...] = ()

    def properties(self) -> dict[str, str]:
        return {
            "txtvers": TXT_VERSION,
            "id": self.node_id,
            "mesh": self.mesh_hash,
            "proto": str(self.protocol),
            "port": str(self.mesh_port),
            "dicom": str(self.dicom_port),
            "aet": self.aet,
        }


def mesh_hash(mesh_id: str) -> str:
    """What the mesh record carries instead of the mesh id itself."""
    return hashlib.sha256(f"pacsmesh-mesh:{mesh_id}".encode()).hexdigest()[:16]


def _text(props: TxtProperties, key: str) -> str | None:
    for k, v in props.items():
        name = k.decode("utf-8", "replace") if isinstance(k, bytes) else k
        if name.lower() == key.lower():
            if v is None:
                return ""
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return None


def _port(value: str | None, what: str) -> int:
    try:
        port = int(value or "")
    except ValueError:
        raise RecordError(f"bad {what} port {value!r}") from None
    if not 1 <= port <= 65535:
        raise RecordError(f"bad {what} port {value!r}")
    return port


def decode_mesh(
    props: TxtProperties, addresses: tuple[str, ...] = ()
) -> MeshRecord:
    if _text(props, "txtvers") != TXT_VERSION:
        raise RecordError("unknown txtvers")
    node_id = _text(props, "id") or ""
    if not re.fullmatch(r"[0-9A-Za-z-]{8,80}", node_id):
        raise RecordError(f"bad node id {node_id!r}")
    try:
        protocol = int(_text(props, "proto") or "")
    except ValueError:
        raise RecordError("bad protocol version") from None
    return MeshRecord(
        node_id=node_id,
        mesh_hash=_text(props, "mesh") or "",
        mesh_port=_port(_text(props, "port"), "mesh"),
        dicom_port=_port(_text(props, "dicom"), "DICOM"),
        aet=(_text(props, "aet") or "").strip(),
        protocol=protocol,
        addresses=addresses,
    )


def decode_dicom(
    props: TxtProperties, port: int, addresses: tuple[str, ...] = ()
) -> DicomRecord:
    aet = (_text(props, "AET") or "").strip()
    if not aet or len(aet) > 16:
        raise RecordError(f"bad AET {aet!r}")
    return DicomRecord(
        aet=aet,
        device_type=(_text(props, "PrimaryDeviceType") or "").strip(),
        port=port,
        addresses=addresses,
    )


def instance_label(text: str) -> str:
    """A DNS-SD instance label: at most 63 bytes, no dots (they separate labels)."""
    return text.replace(".", "-")[:63]


def dicom_instance_name(
    aet: str, node_id: str, renamed: bool, service_type: str = DICOM_TYPE
) -> str:
    """The DICOM record's instance name; ``renamed`` when another node announces our AET.

    The rename is deterministic (the AET plus our node id's prefix), so both sides agree
    on which record is which without talking.
    """
    label = f"{aet} ({node_id[:7]})" if renamed else aet
    return f"{instance_label(label)}.{service_type}"


def loses_aet_tie(own_node_id: str, other_node_id: str) -> bool:
    """Of two nodes announcing one AET, the larger node id renames its record."""
    return own_node_id > other_node_id
