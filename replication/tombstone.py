"""Tombstones: the only way a study is ever deleted from the mesh. Pure code.

A tombstone names a study (StudyInstanceUID), the node the admin deleted it from, a
time and an optional reason, and is signed with the mesh admin's Ed25519 key, the key
that signs founder and revocation entries in the roster. Any member checks it against
the admin public key its roster carries; one that does not verify is refused.

One study keeps one tombstone: should the admin delete it twice before the first one
spread, every node keeps the same one of the two (earliest, then smallest signature),
so the sets members gossip converge.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from discovery.invite import b64, canonical, public_key_text, unb64, verify_admin_signature
from replication.errors import ReplicationError

KIND = "tombstone"
MAX_REASON = 200
# PS3.5 9.1: digits and dots, components without leading zeros, at most 64 characters.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class TombstoneError(ReplicationError, ValueError):
    """Not a tombstone this mesh accepts (malformed, another mesh, forged, tampered).

    Under the root, not one of its branches: the document may be a peer's (gossip) or
    this node's own (``pacsmesh delete``, the spool), and only the caller knows which."""


def valid_uid(uid: str) -> bool:
    return len(uid) <= 64 and _UID_RE.match(uid) is not None


@dataclass(frozen=True)
class Tombstone:
    mesh_id: str
    study_uid: str
    deleted_by: str  # node id of the node the admin ran the command on
    at: float
    reason: str
    sig: str

    def to_json(self) -> dict[str, Any]:
        return {**_body(self.mesh_id, self.study_uid, self.deleted_by, self.at, self.reason),
                "sig": self.sig}

    def order(self) -> tuple[float, str]:
        return self.at, self.sig


def _body(mesh_id: str, study_uid: str, deleted_by: str, at: float,
          reason: str) -> dict[str, Any]:
    return {"kind": KIND, "mesh": mesh_id, "study": study_uid, "by": deleted_by, "at": at,
            "reason": reason}


def make_tombstone(
    admin: Ed25519PrivateKey, mesh_id: str, study_uid: str, deleted_by: str, now: float,
    reason: str = "",
) -> Tombstone:
    if not valid_uid(study_uid):
        raise TombstoneError(f"not a StudyInstanceUID: {study_uid!r}")
    if len(reason) > MAX_REASON:
        raise TombstoneError(f"the reason is longer than {MAX_REASON} characters")
    body = _body(mesh_id, study_uid, deleted_by, now, reason)
    return Tombstone(mesh_id, study_uid, deleted_by, now, reason,
                     b64(admin.sign(canonical(body))))


def check_tombstone(data: Any, mesh_id: str, admin_key: str) -> Tombstone:
    """The tombstone ``data`` holds, if this mesh's admin key signed exactly it."""
    stone = _parse(data)
    try:
        signature = unb64(stone.sig)
    except ValueError as exc:  # binascii.Error: not base64
        raise TombstoneError(f"malformed tombstone (signature: {exc})") from None
    if stone.mesh_id != mesh_id:
        raise TombstoneError("tombstone of another mesh")
    if not valid_uid(stone.study_uid):
        raise TombstoneError("tombstone names no valid StudyInstanceUID")
    # The signed body is rebuilt from the parsed fields, and only they are kept: a field
    # added on the way is dropped, a changed one fails the signature.
    payload = canonical(_body(stone.mesh_id, stone.study_uid, stone.deleted_by, stone.at,
                              stone.reason))
    if not verify_admin_signature(admin_key, payload, signature):
        raise TombstoneError("tombstone not signed by the mesh admin key")
    return stone


def _parse(data: Any) -> Tombstone:
    """The fields of a tombstone document, each of its JSON type (a number for ``at``)."""
    if not isinstance(data, dict):
        raise TombstoneError(f"malformed tombstone (a {type(data).__name__}, not an object)")
    if data.get("kind") != KIND:
        raise TombstoneError(f"malformed tombstone (kind {data.get('kind')!r:.40})")
    for key in ("mesh", "study", "by", "sig"):
        if not isinstance(data.get(key), str):
            raise TombstoneError(f"malformed tombstone ({key!r} missing or not a string)")
    at, reason = data.get("at"), data.get("reason", "")
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise TombstoneError("malformed tombstone ('at' missing or not a number)")
    if not isinstance(reason, str):
        raise TombstoneError("malformed tombstone ('reason' not a string)")
    return Tombstone(mesh_id=data["mesh"], study_uid=data["study"], deleted_by=data["by"],
                     at=float(at), reason=reason, sig=data["sig"])


def is_admin_key(admin: Ed25519PrivateKey, admin_key: str) -> bool:
    return public_key_text(admin.public_key()) == admin_key


def supersedes(new: Tombstone, old: Tombstone) -> bool:
    """Whether ``new`` replaces ``old`` as the one tombstone of their study."""
    return new.study_uid == old.study_uid and new.order() < old.order()


def digest(signatures: Iterable[str]) -> str:
    """One value for a set of tombstones: members compare it before sending lists."""
    return hashlib.sha256("\n".join(sorted(signatures)).encode()).hexdigest()[:32]
