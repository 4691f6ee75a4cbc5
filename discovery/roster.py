"""The mesh roster: members, their certificates and AE titles, and revocations.

The roster is a set of signed entries, so any member can add one and all converge by
union (gossip), whoever wrote what first:
- ``founder``: a member added by the admin key (``mesh init``, or the admin directly);
- ``member``: a node admitted by an existing member, carrying the admin-signed invite it
  presented, and signed by the admitting member's node key;
- ``revoke``: signed by the admin key; the node is refused everywhere from then on.
Every entry is checked on every evaluation; a tampered or forged one is ignored and
reported. Pure code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from discovery import json_fields as f
from discovery.errors import LocalDiscoveryError
from discovery.invite import (
    InviteError,
    b64,
    canonical,
    check_invite,
    public_key_text,
    verify_admin_signature,
)
from node.identity import node_id_for

ADMIN = "admin"


class RosterError(LocalDiscoveryError, ValueError):
    """The roster cannot be used (another mesh, unreadable)."""


@dataclass(frozen=True)
class Member:
    node_id: str
    cert_pem: str
    aet: str
    admitted_at: float
    admitted_by: str


@dataclass(frozen=True)
class RosterView:
    members: dict[str, Member]
    revoked: frozenset[str]
    rejected: tuple[tuple[str, str], ...]  # (entry signature prefix, reason)
    version: int
    digest: str

    def is_member(self, node_id: str) -> bool:
        return node_id in self.members and node_id not in self.revoked


def _payload(entry: dict[str, Any]) -> bytes:
    return canonical({k: v for k, v in entry.items() if k != "sig"})


def _unreadable(why: str) -> RosterError:
    return RosterError(f"unreadable roster: {why}")


def _signature(entry: dict[str, Any]) -> bytes | None:
    """An entry's signature, or None if it has none that decodes."""
    return f.as_bytes(str(entry["sig"])) if "sig" in entry else None


def _claimed_at(entry: dict[str, Any]) -> float:
    """The time an entry claims, for ordering; 0 for one without a readable time."""
    return f.as_float(entry.get("at", 0) or 0) or 0.0


def _cert_node_id(cert_pem: str) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return node_id_for(cert.public_bytes(Encoding.DER))


def _verify_node_signature(cert_pem: str, payload: bytes, signature: bytes) -> bool:
    try:
        key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass
class Roster:
    mesh_id: str
    admin_key: str
    entries: list[dict[str, Any]] = field(default_factory=list)

    # --- serialisation ----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"mesh": self.mesh_id, "admin": self.admin_key, "entries": self.entries}

    @classmethod
    def from_json(cls, data: Any) -> Roster:
        """A roster from our own file (a peer's goes through ``discovery.wire.RosterPage``)."""
        body = f.mapping(data, "the roster", _unreadable)
        entries = f.items(body, "entries", _unreadable)
        if not all(isinstance(e, dict) for e in entries):
            raise _unreadable("an entry is not an object")
        return cls(f.text(body, "mesh", _unreadable), f.text(body, "admin", _unreadable),
                   [dict(e) for e in entries])

    # --- writing entries ---------------------------------------------------------------

    @classmethod
    def create(
        cls, mesh_id: str, admin: Ed25519PrivateKey, founder_cert_pem: str, aet: str, now: float
    ) -> Roster:
        roster = cls(mesh_id, public_key_text(admin.public_key()))
        roster.add_by_admin(admin, founder_cert_pem, aet, now)
        return roster

    def add_by_admin(
        self, admin: Ed25519PrivateKey, cert_pem: str, aet: str, now: float
    ) -> dict[str, Any]:
        entry = {"kind": "founder", "node_id": _cert_node_id(cert_pem), "cert": cert_pem,
                 "aet": aet, "at": now, "by": ADMIN}
        entry["sig"] = b64(admin.sign(_payload(entry)))
        self.entries.append(entry)
        return entry

    def admit(
        self, admitter_id: str, admitter_key: ec.EllipticCurvePrivateKey, cert_pem: str,
        aet: str, invite_token: str, now: float,
    ) -> dict[str, Any]:
        """Add a joining node; raise InviteError/RosterError if the roster would refuse it."""
        view = self.evaluate()
        if not view.is_member(admitter_id):
            raise RosterError("only a member can admit a node")
        check_invite(invite_token, self.mesh_id, self.admin_key, now)
        node_id = _cert_node_id(cert_pem)
        if node_id in view.revoked:
            raise RosterError("this node has been revoked")
        if view.is_member(node_id):
            return next(e for e in self.entries if e.get("node_id") == node_id)
        holder = _title_holder(view.members, view.revoked, aet, node_id)
        if holder is not None:
            raise RosterError(
                f"AE title {aet!r} is already held by member {holder[:15]}: "
                "join with another --aet"
            )
        entry: dict[str, Any] = {"kind": "member", "node_id": node_id, "cert": cert_pem, "aet": aet,
                 "at": now, "by": admitter_id, "invite": invite_token}
        entry["sig"] = b64(admitter_key.sign(_payload(entry), ec.ECDSA(hashes.SHA256())))
        trial = Roster(self.mesh_id, self.admin_key, [*self.entries, entry])
        if not trial.evaluate().is_member(node_id):
            reason = dict(trial.evaluate().rejected).get(entry["sig"][:16], "refused")
            raise InviteError(reason)
        self.entries.append(entry)
        return entry

    def revoke(self, admin: Ed25519PrivateKey, node_id: str, now: float) -> dict[str, Any]:
        if public_key_text(admin.public_key()) != self.admin_key:
            raise RosterError("this is not the admin key of the mesh")
        entry = {"kind": "revoke", "node_id": node_id, "at": now, "by": ADMIN}
        entry["sig"] = b64(admin.sign(_payload(entry)))
        self.entries.append(entry)
        return entry

    def merge(self, entries: Iterable[dict[str, Any]]) -> int:
        """Add entries we did not have (gossip); return how many. Validity is judged later."""
        known = {e.get("sig") for e in self.entries}
        added = 0
        for entry in entries:
            if isinstance(entry, dict) and entry.get("sig") not in known:
                self.entries.append(dict(entry))
                known.add(entry.get("sig"))
                added += 1
        return added

    # --- judging -----------------------------------------------------------------------

    def evaluate(self) -> RosterView:
        members: dict[str, Member] = {}
        revoked: set[str] = set()
        rejected: list[tuple[str, str]] = []
        uses: dict[str, int] = {}
        accepted_sigs: list[str] = []

        def reject(entry: dict[str, Any], reason: str) -> None:
            rejected.append((str(entry.get("sig", ""))[:16], reason))

        # Deterministic order, the same on every node: by claimed time, then signature.
        ordered = sorted(self.entries, key=lambda e: (_claimed_at(e), str(e.get("sig", ""))))
        # Judged against the final revocations: a title freed by a revocation signed later
        # than the second admission is free for it on every node alike.
        revoked_in_the_end = _valid_revocations(self.admin_key, ordered)
        for entry in ordered:
            sig, at = _signature(entry), f.as_float(entry.get("at"))
            if "kind" not in entry or sig is None or at is None:
                reject(entry, "malformed entry")
                continue
            kind, payload = entry["kind"], _payload(entry)
            if kind == "revoke":
                if not verify_admin_signature(self.admin_key, payload, sig):
                    reject(entry, "revocation not signed by the admin key")
                    continue
                revoked.add(str(entry.get("node_id")))
                accepted_sigs.append(entry["sig"])
                continue
            cert_pem = str(entry.get("cert", ""))
            try:
                node_id = _cert_node_id(cert_pem)
            except ValueError:  # not a PEM certificate (an empty one included)
                reject(entry, "unreadable certificate")
                continue
            if node_id != entry.get("node_id"):
                reject(entry, "node id does not match its certificate")
                continue
            if node_id in revoked:
                reject(entry, "node is revoked")
                continue
            by = str(entry.get("by", ""))
            if kind == "founder":
                if by != ADMIN or not verify_admin_signature(self.admin_key, payload, sig):
                    reject(entry, "founder entry not signed by the admin key")
                    continue
            elif kind == "member":
                admitter = members.get(by)
                if admitter is None or by in revoked:
                    reject(entry, "admitted by a node that is not a member")
                    continue
                if not _verify_node_signature(admitter.cert_pem, payload, sig):
                    reject(entry, "admission not signed by the admitting member")
                    continue
                try:
                    invite = check_invite(str(entry.get("invite", "")), self.mesh_id,
                                          self.admin_key, at)
                except InviteError as exc:
                    reject(entry, str(exc))
                    continue
                aet = str(entry.get("aet", ""))
                holder = _title_holder(members, revoked_in_the_end, aet, node_id)
                if node_id not in members and holder is not None:
                    # Two members admitted the same title at once: the earlier admission
                    # (time, then signature) keeps it, the same on every node.
                    reject(entry, f"AE title {aet!r} is already held by member {holder[:15]}")
                    continue
                if node_id not in members:
                    count = uses.get(invite.token_id, 0)
                    if count >= invite.uses:
                        reject(entry, "invite has no uses left")
                        continue
                    uses[invite.token_id] = count + 1
            else:
                reject(entry, f"unknown entry kind {kind!r}")
                continue
            members.setdefault(node_id, Member(node_id, cert_pem, str(entry.get("aet", "")),
                                               at, by))
            accepted_sigs.append(entry["sig"])
        for node_id in revoked:
            members.pop(node_id, None)
        digest = hashlib.sha256("\n".join(sorted(accepted_sigs)).encode()).hexdigest()[:16]
        return RosterView(members, frozenset(revoked), tuple(rejected), len(accepted_sigs),
                          digest)


def _title_holder(
    members: dict[str, Member], revoked: Iterable[str], aet: str, node_id: str
) -> str | None:
    """The member other than ``node_id`` that holds AE title ``aet``, if one does."""
    title = aet.strip()
    if not title:
        return None
    gone = set(revoked)
    return next((m.node_id for m in members.values()
                 if m.aet.strip() == title and m.node_id != node_id
                 and m.node_id not in gone), None)


def _valid_revocations(admin_key: str, entries: Iterable[dict[str, Any]]) -> set[str]:
    out = set()
    for entry in entries:
        if entry.get("kind") != "revoke":
            continue
        sig = _signature(entry)
        if sig is not None and verify_admin_signature(admin_key, _payload(entry), sig):
            out.add(str(entry.get("node_id")))
    return out
