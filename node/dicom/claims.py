"""Whether a calling AE title is believable from where the association comes (pure code).

An AE title is a label any device may put in its A-ASSOCIATE-RQ, and members' titles are
visible on the LAN (mDNS, the roster). So a title that belongs to a mesh member counts as
that member only from one of the member's known addresses (the peer table's), or over
DICOM TLS with the member's own certificate (its node id); the DICOM TLS server does not
ask clients for certificates yet (node/dicom/tls.py), so today the address decides. Other
devices' titles cannot be checked this way: for them the node trusts the title, and
``access = "strict"`` with DICOM TLS is the way to narrow who may connect at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MemberIdentity:
    """A mesh member as the DICOM side sees it: its title, node id (the SHA-256 of its
    certificate, as node.identity.node_id_for) and the addresses it is known at."""

    aet: str
    node_id: str
    addresses: frozenset[str]


# The members of the mesh this node is in (none when alone), asked each time: they change.
Members = Callable[[], Sequence[MemberIdentity]]


# This host, as the CLI reaches the node (node.pull.local_node). Not all of 127.0.0.0/8:
# any local program can bind those, and they must not pass for this node.
LOCALHOST = frozenset({"127.0.0.1", "::1"})


@dataclass(frozen=True)
class KnownPeers:
    """The AEs whose address the node knows, for the member check and the reserved slots."""

    own_aet: str
    own_addresses: frozenset[str]  # besides LOCALHOST: the bind address, if not a wildcard
    modalities: Mapping[str, frozenset[str]]  # configured AE title -> its host's addresses
    members: Members = lambda: ()

    def _members_of(self, aet: str) -> list[MemberIdentity]:
        return [m for m in self.members() if m.aet == aet]

    def _is_own(self, address: str) -> bool:
        return address in LOCALHOST or address in self.own_addresses

    def eligible_address(self, address: str) -> bool:
        """A known AE lives at ``address``: it may take a reserved slot, pending its request."""
        if self._is_own(address):
            return True
        if any(address in addrs for addrs in self.modalities.values()):
            return True
        return any(address in m.addresses for m in self.members())

    def member_claim(self, aet: str, address: str, cert_node_id: str | None) -> str | None:
        """Why ``aet`` is not believable from ``address`` (None: it is, or it is no
        member's title). This node's own title counts only from this host."""
        aet = aet.strip()
        if aet == self.own_aet:
            return None if self._is_own(address) else "this node's own AE title from another host"
        members = self._members_of(aet)
        if not members or _proven(members, address, cert_node_id):
            return None
        return "a mesh member's AE title from an address not known for that member"

    def consistent(self, aet: str, address: str, cert_node_id: str | None) -> bool:
        """``aet`` is a known AE and ``address`` (or the certificate) fits it."""
        aet = aet.strip()
        if aet == self.own_aet:
            return self._is_own(address)
        if address in self.modalities.get(aet, frozenset()):
            return True
        members = self._members_of(aet)
        return bool(members) and _proven(members, address, cert_node_id)


def _proven(members: Iterable[MemberIdentity], address: str, cert_node_id: str | None) -> bool:
    return any(address in m.addresses or (cert_node_id is not None and cert_node_id == m.node_id)
               for m in members)
