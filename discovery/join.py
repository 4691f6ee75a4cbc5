"""The joining side of the join handshake: one attempt through one member.

With a token that pins members' certificates, the joiner first completes a bare TLS
handshake to learn the server's certificate; if its hash is not one the token pins, the
connection is closed with nothing sent. Otherwise the join request goes over a second
connection that trusts exactly that certificate, so the token reaches only a server
holding the pinned member's key. With a token that pins none (older tokens, or made with
``--no-pin``), any server is asked, and only the roster it answers is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from discovery.errors import ProbeFailed, Refused, RemoteAnswerInvalid
from discovery.invite import Invite, canonical
from discovery.join_policy import (
    REFUSED_CAP,
    TRANSIENT_CAP,
    Attempt,
    JoinSchedule,
    Outcome,
    printable,
    refusal,
    telling,
)
from discovery.mesh_client import call
from discovery.roster import Roster
from discovery.tls import joining_context, pinned_context
from discovery.wire import JOIN_PATH, JoinReply, JoinRequest
from node.identity import NodeIdentity, node_id_for

log = logging.getLogger(__name__)
REFUSAL_PREFIX = "join refused: "


def join_proof_payload(invite: Invite, node_id: str) -> bytes:
    return canonical({"join": invite.mesh_id, "token": invite.token_id, "node": node_id})


async def server_certificate(host: str, port: int, seconds: float) -> bytes:
    """The DER certificate the server at host:port presents; nothing else is sent."""
    async with asyncio.timeout(seconds):
        _, writer = await asyncio.open_connection(host, port, ssl=joining_context(),
                                                  server_hostname="")
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(seconds):
                await writer.wait_closed()
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return der


@dataclass(frozen=True)
class JoinAnswer:
    attempt: Attempt
    roster: Roster | None = None  # set when the attempt admitted us
    server_id: str = ""  # the pinned member that answered ("" with an unpinned token)


class JoinClient:
    def __init__(self, identity: NodeIdentity, aet: str, token: str, invite: Invite,
                 seconds: float) -> None:
        self._identity = identity
        self._aet = aet
        self._token = token
        self.invite = invite
        self._seconds = seconds

    def _request(self) -> JoinRequest:
        key = self._identity.private_key()
        proof = key.sign(join_proof_payload(self.invite, self._identity.node_id),
                         ec.ECDSA(hashes.SHA256()))
        return JoinRequest(self._token, self._aet, self._identity.cert_pem.decode(), proof)

    async def _pinned(self, host: str, port: int, where: str) -> tuple[
            ssl.SSLContext, str] | JoinAnswer:
        """The context to send the token with, and the pinned member that holds the
        server's certificate; or why the token must not be sent there."""
        if not self.invite.pins:
            return joining_context(), ""
        try:
            der = await server_certificate(host, port, self._seconds)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            return JoinAnswer(Attempt(Outcome.UNREACHABLE, where,
                                      printable(f"{type(exc).__name__}: {exc}")))
        server_id = node_id_for(der)
        if server_id not in self.invite.pins:
            return JoinAnswer(Attempt(
                Outcome.UNTRUSTED, where, f"the server's certificate ({server_id[:15]}) is "
                "not one of the members the invite names; nothing was sent to it"),
                server_id=server_id)
        return pinned_context(der), server_id

    async def attempt(self, host: str, port: int) -> JoinAnswer:
        where = f"{host}:{port}"
        pinned = await self._pinned(host, port, where)
        if isinstance(pinned, JoinAnswer):
            return pinned
        context, server_id = pinned
        async with aiohttp.ClientSession() as session:
            try:
                answer = await call(session, "POST", host, port, JOIN_PATH, self._seconds,
                                    context, body=self._request().to_json())
                roster = JoinReply.from_json(answer).roster.roster()
            except Refused as exc:
                return JoinAnswer(refusal(where, exc.detail.removeprefix(REFUSAL_PREFIX)
                                          or str(exc)), server_id=server_id)
            except ProbeFailed as exc:
                return JoinAnswer(Attempt(Outcome.UNREACHABLE, where, printable(str(exc))),
                                  server_id=server_id)
            except RemoteAnswerInvalid as exc:
                return JoinAnswer(refusal(where, f"not a join answer ({exc})"),
                                  server_id=server_id)
        # Trust nothing the server says until the admin key from the invite vouches for it:
        # our admission must be signed by a member whose membership the admin signed.
        if (roster.mesh_id, roster.admin_key) != (self.invite.mesh_id, self.invite.admin_key):
            return JoinAnswer(refusal(where, "the answer is not from our mesh"),
                              server_id=server_id)
        if not roster.evaluate().is_member(self._identity.node_id):
            return JoinAnswer(refusal(where, "the answer does not admit us"),
                              server_id=server_id)
        return JoinAnswer(Attempt(Outcome.JOINED, where), roster, server_id)


JoinEvent = Callable[[bool, str, str, str, str], None]  # as Discovery.on_join


class Joining:
    """Rounds of attempts: every candidate in turn until one admits us, then the
    schedule says when to go round again (or that it is no use)."""

    def __init__(
        self, client: JoinClient, clock: Callable[[], float],
        targets: Callable[[], list[tuple[str, int]]],
        admitted: Callable[[Roster, str, int], Awaitable[None]], on_refused: JoinEvent,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.schedule = JoinSchedule(clock)
        self._clock = clock
        self._wall = wall
        self._targets = targets
        self._admitted = admitted
        self._on_refused = on_refused
        self._untrusted: set[tuple[str, str]] = set()  # (address, server id) met

    def due(self) -> bool:
        return self.schedule.due()

    async def round(self) -> None:
        attempts: list[Attempt] = []
        if self._wall() > self.client.invite.expires:
            attempts.append(Attempt(Outcome.REFUSED_FOR_GOOD, "", "invite has expired"))
        for host, port in [] if attempts else self._targets():
            answer = await self.client.attempt(host, port)
            attempts.append(answer.attempt)
            if answer.attempt.outcome is Outcome.UNTRUSTED:
                self._untrusted_server(host, answer.server_id, answer.attempt)
            if answer.roster is not None:
                await self._admitted(answer.roster, host, port)
                break
            if answer.attempt.outcome is Outcome.REFUSED_FOR_GOOD:
                break
        self._report(telling(attempts))

    def _untrusted_server(self, host: str, server_id: str, attempt: Attempt) -> None:
        """A server at a candidate address that is not a member the invite names was told
        nothing; logged and audited once per address and certificate."""
        if (attempt.where, server_id) in self._untrusted:
            return
        self._untrusted.add((attempt.where, server_id))
        log.warning("join through %s refused: %s", attempt.where, attempt.reason)
        self._on_refused(False, server_id, "", host,
                         f"joining: the server at {attempt.where} is not a member the "
                         "invite names; the token was not sent")

    def _report(self, result: Attempt) -> None:
        changed = self.schedule.record(result)
        outcome, where = result.outcome, result.where or "-"
        if outcome is Outcome.JOINED:
            return
        if outcome is Outcome.REFUSED_FOR_GOOD:
            log.error("cannot join the mesh: %s (%s); this token can never succeed: ask "
                      "for a new invite. Working alone.", result.reason, where)
            return
        wait = self.schedule.next_at - self._clock()
        if not changed:
            log.debug("join attempt %d: %s %s (%s); next in %.0f s", self.schedule.failures,
                      outcome.value, where, result.reason, wait)
        elif outcome is Outcome.REFUSED:
            log.warning("join refused by %s: %s; trying again with back-off (up to %.0f "
                        "min), logged again only if this changes", where, result.reason,
                        REFUSED_CAP / 60)
        elif outcome is Outcome.UNREACHABLE:
            log.info("join: no member answered yet (last %s: %s); trying again with "
                     "back-off (up to %.0f s)", where, result.reason, TRANSIENT_CAP)
        # UNTRUSTED servers were each logged when met (_untrusted_server).
