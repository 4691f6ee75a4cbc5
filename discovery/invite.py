"""Invite tokens: one line, signed by the mesh admin key, checkable by any member.

A token names the mesh and its admin public key, an expiry and a number of uses, and
may carry seed addresses of members. From payload version 2 it may also pin members'
certificates (their SHA-256, which is their node id): a joining node then sends its token
only to a server proving one of them in the TLS handshake. A token without pins is
written as version 1, byte for byte the format older nodes make and read, and a version 2
token keeps every version 1 field, so older members still admit with it (they ignore the
pins; the check is the joiner's). Pure code.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from discovery import json_fields as f
from discovery.errors import LocalDiscoveryError
from node.identity import IdentityError, node_id_digest, node_id_from_digest

# The prefix stays for every payload version: a new prefix would make older members
# refuse new tokens, and reject admissions made with them when they judge the roster.
PREFIX = "pacsmesh-invite-1"
PINNED_VERSION = 2


class InviteError(LocalDiscoveryError, ValueError):
    """Not a valid invite for this mesh (malformed, forged, expired, used up)."""


def _not_a_token(why: str) -> InviteError:
    return InviteError(f"not an invite token ({why})")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def public_key_text(key: Ed25519PublicKey) -> str:
    return b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def verify_admin_signature(admin_key: str, payload: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(unb64(admin_key)).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Invite:
    mesh_id: str
    admin_key: str
    token_id: str
    expires: float
    uses: int
    seeds: tuple[str, ...] = ()
    # Node ids of the members a joiner may send this token to; empty: any server (as
    # tokens were before version 2), with the roster it answers checked only afterwards.
    pins: tuple[str, ...] = ()
    version: int = 1


def make_invite(
    admin: Ed25519PrivateKey, mesh_id: str, expires: float, uses: int,
    seeds: tuple[str, ...] = (), pins: tuple[str, ...] = (),
) -> str:
    if uses < 1:
        raise InviteError("an invite needs at least one use")
    data: dict[str, Any] = {
        "mesh": mesh_id, "admin": public_key_text(admin.public_key()),
        "id": secrets.token_hex(8), "exp": expires, "uses": uses, "seeds": list(seeds),
    }
    if pins:
        try:
            digests = [b64(node_id_digest(p)) for p in dict.fromkeys(pins)]
        except IdentityError as exc:
            raise InviteError(f"cannot pin: {exc}") from None
        data |= {"v": PINNED_VERSION, "pins": digests}
    payload = canonical(data)
    return f"{PREFIX}.{b64(payload)}.{b64(admin.sign(payload))}"


def _pins(data: Mapping[str, Any]) -> tuple[str, ...]:
    digests = [f.as_bytes(p) for p in f.items(data, "pins", _not_a_token)]
    if any(d is None or len(d) != 32 for d in digests):
        raise _not_a_token("a pin is not a SHA-256")
    return tuple(node_id_from_digest(d) for d in digests if d is not None)


def parse_invite(token: str) -> Invite:
    """Check form and signature (against the admin key the token names)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise _not_a_token(f"{len(parts)} parts, not 3")
    prefix, body, sig = parts
    if prefix != PREFIX:
        raise _not_a_token("unknown token format")
    payload, signature = f.as_bytes(body), f.as_bytes(sig)
    if payload is None or signature is None:
        raise _not_a_token("not base64")
    try:
        data = f.mapping(json.loads(payload), "the payload", _not_a_token)
    except ValueError as exc:  # not JSON (or not UTF-8)
        raise _not_a_token(str(exc)) from None
    invite = Invite(
        mesh_id=f.text(data, "mesh", _not_a_token), admin_key=f.text(data, "admin", _not_a_token),
        token_id=f.text(data, "id", _not_a_token), expires=f.real(data, "exp", _not_a_token),
        uses=f.integer(data, "uses", _not_a_token),
        seeds=f.texts(data, "seeds", _not_a_token),
        pins=_pins(data), version=f.integer(data, "v", _not_a_token, 1),
    )
    if not verify_admin_signature(invite.admin_key, payload, signature):
        raise InviteError("invite signature does not verify")
    return invite


def check_invite(token: str, mesh_id: str, admin_key: str, now: float) -> Invite:
    """A token valid for this mesh at ``now`` (use counting is the roster's job)."""
    invite = parse_invite(token)
    if invite.mesh_id != mesh_id or invite.admin_key != admin_key:
        raise InviteError("invite is for another mesh")
    if now > invite.expires:
        raise InviteError("invite has expired")
    return invite
