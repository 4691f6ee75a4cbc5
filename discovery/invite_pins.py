"""Which members an invite pins: the issuing member, the founder(s), every other member
of the roster as it stands, and the seeds named.

Every member, not only the issuer and the seeds: any member admits, so a token must let a
node join through another member while the admin's node is down. Members admitted after
the token was made are not pinned; a joiner refuses them. A seed named as HOST:PORT is
checked by the certificate the node there proves in a TLS handshake against the roster's
certificates (blocking; run by ``mesh invite``): one that cannot be reached, or is not a
member, stays in the token as an address only, and ``mesh invite`` says so.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterable

from discovery.membership import MembershipStore, admin_credentials, create_invite
from discovery.roster import ADMIN, RosterView
from discovery.tls import client_context
from node.identity import NodeIdentity, node_id_for

LEARN_SECONDS = 3.0


def seed_member(identity: NodeIdentity, view: RosterView, host: str, port: int,
                seconds: float = LEARN_SECONDS) -> str:
    """The node id of the member answering at host:port (raises OSError if none does)."""
    context = client_context(identity, [m.cert_pem for m in view.members.values()])
    with socket.create_connection((host, port), timeout=seconds) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("no certificate")
    return node_id_for(der)


def invite_pins(
    view: RosterView, own_id: str, named_seeds: Iterable[str],
    learn: Callable[[str, int], str],
) -> tuple[tuple[str, ...], list[str]]:
    """The node ids to pin, and one line for each named seed that could not be pinned."""
    pins = [own_id] if view.is_member(own_id) else []
    members = sorted(view.members.values(), key=lambda m: (m.admitted_by != ADMIN,
                                                           m.admitted_at))
    pins += [m.node_id for m in members if view.is_member(m.node_id)]
    notes: list[str] = []
    for seed in named_seeds:
        host, _, port = seed.rpartition(":")
        try:
            node_id = learn(host, int(port))
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            notes.append(f"seed {seed}: no member proved itself there ({exc}); a node "
                         "joining there accepts only one of the pinned members")
            continue
        if not view.is_member(node_id):
            notes.append(f"seed {seed}: the node there ({node_id[:15]}) is not a member; "
                         "a node joining there will refuse it")
            continue
        pins.append(node_id)
    return tuple(dict.fromkeys(pins)), notes


def describe(view: RosterView, pins: Iterable[str]) -> str:
    return ", ".join(f"{view.members[p].aet} ({p[:15]})" if p in view.members else p[:15]
                     for p in pins)


def issue_invite(
    store: MembershipStore, identity: NodeIdentity, valid_seconds: float, uses: int,
    seeds: tuple[str, ...], named: tuple[str, ...], pin: bool = True,
) -> tuple[str, list[str]]:
    """``mesh invite``: the token, and the lines that say what it pins (or that it pins
    nothing). ``named`` are the seeds the operator gave (the others are this node's)."""
    _, roster = admin_credentials(store)
    view = roster.evaluate()
    pins, notes = invite_pins(view, identity.node_id, named if pin else (),
                              lambda host, port: seed_member(identity, view, host, port))
    if not pin:
        pins = ()
    token = create_invite(store, valid_seconds, uses, seeds, pins)
    if pins:
        lines = [f"pins the certificate of {describe(view, pins)}: a joining node sends "
                 "the token to no other server", *notes]
    else:
        lines = ["this token pins no member's certificate: a joining node cannot tell a "
                 "member from a stand-in at the addresses it tries, and sends the token to "
                 "whichever answers (as tokens did before pinning)"]
    return token, lines
