"""Admission: a member admitting a joining node that presents a valid invite.

The joiner proves it holds its certificate's key by signing the token id and its node id;
the entry this member signs into the roster carries the invite, so every member can check
the admission for itself. Told to the composition root (the audit trail), admitted or not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from discovery.invite import InviteError, parse_invite
from discovery.join import join_proof_payload
from discovery.roster import RosterError
from discovery.roster_sync import RosterSync
from discovery.wire import JoinReply, JoinRequest, RosterPage
from node.identity import node_id_for

log = logging.getLogger("discovery.service")  # these lines have always come from there

# Told of every join this node decides: (admitted, node id, AET, address, why).
JoinObserver = Callable[[bool, str, str, str, str], None]


class Admission:
    def __init__(
        self, node_id: str, key: ec.EllipticCurvePrivateKey, sync: RosterSync,
        on_join: JoinObserver, wall: Callable[[], float],
    ) -> None:
        self._node_id = node_id
        self._key = key
        self._sync = sync
        self._on_join = on_join
        self._wall = wall

    def _admit(self, join: JoinRequest) -> str:
        """Add the joiner to our roster; its node id. Raises InviteError or RosterError if
        it may not join, ValueError or InvalidSignature if the request is malformed."""
        invite = parse_invite(join.token)
        cert = x509.load_pem_x509_certificate(join.cert_pem.encode())
        joiner = node_id_for(cert.public_bytes(Encoding.DER))
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise InviteError("unsupported key type")
        key.verify(join.proof, join_proof_payload(invite, joiner), ec.ECDSA(hashes.SHA256()))
        if not self._sync.view.is_member(self._node_id):
            raise RosterError("this node is not a member and cannot admit")
        self._sync.roster.admit(self._node_id, self._key, join.cert_pem, join.aet, join.token,
                                self._wall())
        return joiner

    async def handler(self, request: web.Request) -> web.Response:
        remote = request.remote
        try:
            # ValueError: not JSON, not a join request (RemoteAnswerInvalid), not a PEM
            # certificate; InviteError and RosterError are ValueErrors too, caught first.
            join = JoinRequest.from_json(await request.json())
            joiner = self._admit(join)
        except (InviteError, RosterError) as exc:
            log.warning("mesh join from %s refused: %s", remote, exc)
            self._on_join(False, "", "", remote or "", str(exc))
            raise web.HTTPForbidden(text=f"join refused: {exc}") from None
        except (ValueError, InvalidSignature) as exc:
            log.warning("mesh join from %s refused: malformed request (%s)", remote, exc)
            self._on_join(False, "", "", remote or "", "malformed join request")
            raise web.HTTPBadRequest(text="malformed join request") from None
        await self._sync.apply(None)
        self._on_join(True, joiner, join.aet, remote or "", "admitted")
        log.info("admitted node %s (%s) from %s into the mesh", joiner[:15], join.aet, remote)
        return web.json_response(JoinReply(RosterPage.of(self._sync.roster)).to_json())
