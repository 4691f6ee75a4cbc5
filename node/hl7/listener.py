"""The HL7 listener: MLLP over TCP (or TLS), many messages per connection, each
acknowledged on the same connection once what it says is durable.

Framing garbage or an oversized frame closes the connection (nothing after it can be
lined up again); a frame that is not a message we take gets its AR or AE and the
connection goes on. Patient names and IDs are logged only at DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from node.hl7.ack import build_ack
from node.hl7.errors import AckCode, ErrorCode, FramingError, MessageRejected, Problem
from node.hl7.framing import DEFAULT_MAX_FRAME, MllpFramer, frame
from node.hl7.message import AdtMessage, Header, read_header
from node.hl7.orders import OrderMessage, parse_any

log = logging.getLogger(__name__)
READ_SIZE = 65536
IDLE_TIMEOUT = 300.0  # a connection silent this long is closed (interfaces reconnect)

# Applies a message; raises MessageRejected (AE) when it cannot. Durable on return.
Apply = Callable[[AdtMessage | OrderMessage], Awaitable[None]]
# Told of every message answered: the header, and the problem (None: AA).
Answered = Callable[[str, Header, Problem | None], None]


@dataclass(frozen=True)
class ListenerSettings:
    bind: str
    port: int
    tls: ssl.SSLContext | None = None
    max_frame: int = DEFAULT_MAX_FRAME
    idle_timeout: float = IDLE_TIMEOUT


async def answer(raw: bytes, apply: Apply) -> tuple[bytes, Header, Problem | None]:
    """The acknowledgement for one frame's payload, after applying it."""
    header = Header()
    try:
        header, msg = read_header(raw)
        message = parse_any(header, msg)
        await apply(message)
    except MessageRejected as exc:
        return build_ack(header, exc.problem), header, exc.problem
    except Exception as exc:  # our failure: AE, so the sender keeps it and retries
        log.exception("HL7 message %s not applied", header.control_id)
        problem = Problem(AckCode.ERROR, ErrorCode.APPLICATION_ERROR,
                          f"not applied: {type(exc).__name__}")
        return build_ack(header, problem), header, problem
    return build_ack(header), header, None


class Hl7Listener:
    def __init__(self, settings: ListenerSettings, apply: Apply,
                 answered: Answered | None = None) -> None:
        self.settings = settings
        self._apply = apply
        self._answered = answered
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        s = self.settings
        self._server = await asyncio.start_server(self._serve, s.bind, s.port, ssl=s.tls)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            for task in list(self._connections):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        framer = MllpFramer(self.settings.max_frame)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE),
                                                  self.settings.idle_timeout)
                except TimeoutError:
                    log.info("HL7 connection from %s idle: closed", address)
                    return
                if not data:
                    if framer.partial:
                        log.warning("HL7 connection from %s ended inside a frame", address)
                    return
                for payload in framer.feed(data):
                    ack, header, problem = await answer(payload, self._apply)
                    writer.write(frame(ack))
                    await writer.drain()
                    self._report(address, header, problem)
        except FramingError as exc:
            log.warning("HL7 connection from %s closed: %s", address, exc)
        except (ConnectionError, ssl.SSLError) as exc:
            log.info("HL7 connection from %s lost: %s", address, exc)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)

    def _report(self, address: str, header: Header, problem: Problem | None) -> None:
        if problem is None:
            log.info("HL7 %s %s from %s: AA", header.trigger, header.control_id, address)
        else:
            log.warning("HL7 %s %s from %s: %s %s at %s", header.trigger or "?",
                        header.control_id or "?", address, problem.ack.value,
                        int(problem.code), problem.location or "-")
            log.debug("HL7 %s: %s", header.control_id, problem.text)
        if self._answered is not None:
            self._answered(address, header, problem)
