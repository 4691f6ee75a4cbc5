"""TLS 1.3 contexts for node-to-node traffic, with the roster's certificates as trust.

Python's ssl cannot ask for a client certificate without validating it, so the server
asks (CERT_OPTIONAL) and trusts exactly the roster members' self-signed certificates
(partial chains: each is its own anchor). An unknown certificate fails the handshake; a
client with none gets through only to the join endpoint. After every handshake the peer's
certificate hash is checked against the roster, which is what revocation relies on:
a trust store can have certificates added, never removed.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

from discovery.errors import RemoteDiscoveryError
from node.identity import NodeIdentity, node_id_for


class PeerNotTrusted(RemoteDiscoveryError, ConnectionError):
    """The other side is not the member we meant to talk to."""


def _base(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def trust(ctx: ssl.SSLContext, cert_pems: Iterable[str]) -> None:
    for pem in cert_pems:
        ctx.load_verify_locations(cadata=pem)


def server_context(identity: NodeIdentity, member_certs: Iterable[str]) -> ssl.SSLContext:
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(identity.cert_path, identity.key_path)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    trust(ctx, member_certs)
    return ctx


def client_context(identity: NodeIdentity, member_certs: Iterable[str]) -> ssl.SSLContext:
    """For members talking to members: both sides present and check certificates."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False  # peers are named by certificate hash, not host name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(identity.cert_path, identity.key_path)
    trust(ctx, member_certs)
    return ctx


def member_context(identity: NodeIdentity, member_cert: str) -> ssl.SSLContext:
    """For calling one known member: trusting only its certificate, a completed handshake
    proves the server holds that member's key (the node id is the certificate's hash)."""
    return client_context(identity, [member_cert])


def joining_context() -> ssl.SSLContext:
    """For a node that is not a member yet, to learn the server's certificate (checked
    against the invite's pins, see :func:`pinned_context`), or, with a token that pins
    none, to join through any server, checking the roster it sends back (signed by the
    admin key named in the invite) after the fact."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def pinned_context(cert_der: bytes) -> ssl.SSLContext:
    """For a joining node calling a member its invite pins: trusting only that member's
    certificate, a completed handshake proves the server holds the member's key before
    the token (or any other byte of the request) is sent."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=cert_der)
    return ctx


def peer_node_id(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return node_id_for(der) if der else None
