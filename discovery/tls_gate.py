"""Serve an aiohttp app over TLS, logging every refused handshake in one clear line.

asyncio reports failed server handshakes (plain HTTP, TLS 1.2, an unknown certificate)
only in debug mode. Here each connection is accepted as plain TCP, upgraded with
``loop.start_tls``, and handed to aiohttp's request handler only once the handshake
succeeded; a failure is logged with the peer's address, told to ``on_refused`` (the
audit trail, rate-limited by the caller) and closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
HANDSHAKE_SECONDS = 10.0
# Told of every refused handshake: (peer address, why).
RefusalObserver = Callable[[str, str], None]


class _Gate(asyncio.Protocol):
    """Holds a connection while its TLS handshake runs, then steps aside."""

    def __init__(
        self, context: ssl.SSLContext, make_protocol: Callable[[], asyncio.Protocol],
        what: str, on_refused: RefusalObserver | None = None,
    ) -> None:
        self._context = context
        self._on_refused = on_refused
        self._make_protocol = make_protocol
        self._what = what
        self._app: asyncio.Protocol | None = None
        self._early: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._task = asyncio.ensure_future(self._handshake(transport))

    async def _handshake(self, raw: asyncio.Transport) -> None:
        peer = raw.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if peer else "?"
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                raw, self, self._context, server_side=True,
                ssl_handshake_timeout=HANDSHAKE_SECONDS,
            )
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.warning("%s refused a connection from %s: TLS handshake failed (%s)",
                        self._what, where, reason)
            raw.close()
            if self._on_refused is not None:
                self._on_refused(peer[0] if peer else "", f"TLS handshake failed ({reason})")
            return
        if tls is None:
            raw.close()
            return
        app = self._make_protocol()
        tls.set_protocol(app)
        app.connection_made(tls)
        self._app = app
        for chunk in self._early:
            app.data_received(chunk)
        self._early.clear()

    def data_received(self, data: bytes) -> None:
        if self._app is not None:
            self._app.data_received(data)
        else:
            self._early.append(data)  # decrypted bytes that beat set_protocol

    def connection_lost(self, exc: Exception | None) -> None:
        if self._app is not None:
            self._app.connection_lost(exc)


async def serve_tls(
    make_protocol: Callable[[], Any], host: str, port: int, context: ssl.SSLContext,
    what: str, on_refused: RefusalObserver | None = None,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Gate(context, make_protocol, what, on_refused), host, port,
        reuse_address=True,
    )
