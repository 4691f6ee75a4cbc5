"""Discovery's mesh wire: the paths, and a frozen type for every JSON body a peer sends us.

Each ``from_json`` (``from_query`` for a query string) raises only
:class:`discovery.errors.RemoteAnswerInvalid`, so a caller catches that one error for
whatever a peer sends, and a bug of ours is not mistaken for a peer's garbage. ``to_json``
writes what the other side reads. Pure code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from discovery import json_fields as f
from discovery.errors import RemoteAnswerInvalid
from discovery.invite import b64
from discovery.records import PROTOCOL_VERSION
from discovery.roster import Roster

HELLO_PATH = "/mesh/hello"
ROSTER_PATH = "/mesh/roster"
JOIN_PATH = "/mesh/join"


def _fail(what: str) -> f.Fail:
    return lambda why: RemoteAnswerInvalid(f"{what}: {why}")


@dataclass(frozen=True)
class PeerInfo:
    """One peer another member knows (peer exchange, in its hello)."""

    node_id: str
    addresses: tuple[str, ...]
    mesh_port: int
    aet: str = ""
    dicom_port: int = 0

    @classmethod
    def from_json(cls, data: Any) -> PeerInfo:
        fail = _fail("not a peer")
        item = f.mapping(data, "a peer", fail)
        return cls(
            node_id=f.text(item, "node_id", fail), addresses=f.texts(item, "addresses", fail),
            mesh_port=f.integer(item, "mesh_port", fail), aet=f.text(item, "aet", fail, ""),
            dicom_port=f.integer(item, "dicom_port", fail, 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "aet": self.aet, "addresses": list(self.addresses),
                "mesh_port": self.mesh_port, "dicom_port": self.dicom_port}


@dataclass(frozen=True)
class Hello:
    """A member's answer to a probe: who it is, and the peers it knows."""

    node_id: str
    aet: str
    mesh_hash: str
    mesh_port: int
    dicom_port: int
    roster_digest: str = ""
    peers: tuple[PeerInfo, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Hello:
        fail = _fail("not a PACSmesh hello")
        body = f.mapping(data, "the answer", fail)
        peers = []
        for item in f.items(body, "peers", fail):
            # One peer we cannot read costs that peer only, as before wire types.
            try:
                peers.append(PeerInfo.from_json(item))
            except RemoteAnswerInvalid:
                continue
        return cls(
            node_id=f.text(body, "node_id", fail), aet=f.text(body, "aet", fail, ""),
            mesh_hash=f.text(body, "mesh", fail), mesh_port=f.integer(body, "mesh_port", fail),
            dicom_port=f.integer(body, "dicom_port", fail, 0),
            roster_digest=f.text(body, "roster", fail, ""), peers=tuple(peers),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id, "aet": self.aet, "mesh": self.mesh_hash,
            "protocol": PROTOCOL_VERSION, "mesh_port": self.mesh_port,
            "dicom_port": self.dicom_port, "roster": self.roster_digest,
            "peers": [p.to_json() for p in self.peers],
        }


@dataclass(frozen=True)
class Introduction:
    """What a prober says of itself in its hello's query string: how to reach it back."""

    node_id: str
    mesh_port: int
    aet: str = ""
    dicom_port: int = 0

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> Introduction:
        fail = _fail("not an introduction")
        return cls(
            node_id=f.text(params, "node_id", fail), mesh_port=f.integer(params, "mesh_port", fail),
            aet=f.text(params, "aet", fail, ""),
            dicom_port=f.integer(params, "dicom_port", fail, 0),
        )

    def to_query(self) -> dict[str, str]:
        return {"node_id": self.node_id, "aet": self.aet, "mesh_port": str(self.mesh_port),
                "dicom_port": str(self.dicom_port)}


@dataclass(frozen=True)
class RosterPage:
    """A roster as a member sends it; its entries are judged by ``Roster.evaluate``."""

    mesh_id: str
    admin_key: str
    entries: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> RosterPage:
        fail = _fail("not a roster")
        body = f.mapping(data, "the roster", fail)
        entries = f.items(body, "entries", fail)
        if not all(isinstance(e, dict) for e in entries):
            raise fail("an entry is not an object")
        return cls(f.text(body, "mesh", fail), f.text(body, "admin", fail), tuple(entries))

    @classmethod
    def of(cls, roster: Roster) -> RosterPage:
        return cls(roster.mesh_id, roster.admin_key, tuple(roster.entries))

    def roster(self) -> Roster:
        return Roster(self.mesh_id, self.admin_key, [dict(e) for e in self.entries])

    def to_json(self) -> dict[str, Any]:
        return {"mesh": self.mesh_id, "admin": self.admin_key,
                "entries": [dict(e) for e in self.entries]}


@dataclass(frozen=True)
class JoinRequest:
    """A joining node's request: its token, AE title, certificate, and its proof (its
    signature of the token and its node id, made with the certificate's key)."""

    token: str
    aet: str
    cert_pem: str
    proof: bytes

    @classmethod
    def from_json(cls, data: Any) -> JoinRequest:
        fail = _fail("not a join request")
        body = f.mapping(data, "the request", fail)
        proof = f.as_bytes(f.text(body, "proof", fail))
        if proof is None:
            raise fail("'proof' is not base64")
        return cls(f.text(body, "token", fail), f.text(body, "aet", fail),
                   f.text(body, "cert", fail), proof)

    def to_json(self) -> dict[str, str]:
        return {"token": self.token, "aet": self.aet, "cert": self.cert_pem,
                "proof": b64(self.proof)}


@dataclass(frozen=True)
class JoinReply:
    """An admitting member's answer: the roster that now counts the joiner."""

    roster: RosterPage

    @classmethod
    def from_json(cls, data: Any) -> JoinReply:
        body = f.mapping(data, "the answer", _fail("not a join answer"))
        if "roster" not in body:
            raise RemoteAnswerInvalid("not a join answer: no 'roster'")
        return cls(RosterPage.from_json(body["roster"]))

    def to_json(self) -> dict[str, Any]:
        return {"roster": self.roster.to_json()}
