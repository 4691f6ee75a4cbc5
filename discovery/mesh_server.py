"""The mesh API's server: HTTPS with mutual TLS on the mesh port.

Only members get past the door (``request["peer"]`` holds the caller's node id); a caller
without a certificate reaches only the join path. Refusals are told to the composition
root at most once a minute per address, with the count of those not told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from discovery.errors import StartFailed
from discovery.peers import Clock
from discovery.refusal_limit import RefusalLimiter
from discovery.roster import RosterView
from discovery.tls import peer_node_id, server_context, trust
from discovery.tls_gate import serve_tls
from discovery.wire import JOIN_PATH
from node.identity import NodeIdentity

log = logging.getLogger("discovery.service")  # the logger these lines always came from

# Told of refused mesh connections, at most one per address a minute: (address, node id
# of the certificate or "", why; with how many more were refused and not told).
MeshRefusalObserver = Callable[[str, str, str], None]


class MeshServer:
    def __init__(
        self, identity: NodeIdentity, member_certs: Iterable[str],
        view: Callable[[], RosterView | None], on_refusal: MeshRefusalObserver, clock: Clock,
    ) -> None:
        self._view = view
        self._on_refusal = on_refusal
        self._refusals = RefusalLimiter(clock=clock)
        self._context = server_context(identity, member_certs)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    def trust(self, cert_pems: list[str]) -> None:
        """Members admitted since may connect too."""
        trust(self._context, cert_pems)

    async def start(self, bind: str, port: int, routes: list[web.RouteDef]) -> None:
        # Objects travel through this API: no small request-size cap.
        app = web.Application(middlewares=[self._authenticate], client_max_size=2**34)
        app.router.add_routes(routes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        assert self._runner.server is not None
        try:
            self._server = await serve_tls(
                self._runner.server, bind, port, self._context, "mesh API",
                on_refused=lambda address, why: self._refused(address, "", why),
            )
        except OSError as exc:
            raise StartFailed(
                f"cannot listen for the mesh on {bind}:{port}: {exc.strerror}"
            ) from None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        transport = request.transport
        peer = peer_node_id(transport.get_extra_info("ssl_object")) if transport else None
        if request.path == JOIN_PATH:
            return await handler(request)
        view = self._view()
        if peer is None or view is None or not view.is_member(peer):
            reason = "no certificate" if peer is None else (
                "revoked" if view and peer in view.revoked else "not a member")
            log.warning("mesh API refused %s from %s (%s): %s", request.path,
                        request.remote, (peer or "-")[:15], reason)
            self._refused(request.remote or "", peer or "",
                          f"{reason} ({request.method} {request.path[:100]})")
            raise web.HTTPForbidden(text=f"refused: {reason}")
        request["peer"] = peer
        return await handler(request)

    def _refused(self, address: str, node_id: str, why: str) -> None:
        suppressed = self._refusals.admit(address)
        if suppressed is None:
            return  # counted; told with this address's next refusal a minute on
        if suppressed:
            why += (f"; {suppressed} more refusal(s) from this address since its last row,"
                    " not recorded")
        self._on_refusal(address, node_id, why)
