"""Sending one stored instance to a member: streamed from its file, resumed where it broke.

The object's plaintext is read through storage a chunk at a time and, when its transfer
syntax is uncompressed, zstd-compressed as it goes (one frame per request), so no
instance is ever whole in memory. For an instance large enough to resume, the receiver
is first asked how much of it it already holds, and the body starts there: the offset is
in raw bytes, and the compressed frame covers only the rest.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Any, Protocol

import zstandard

from node.storage import TamperedObject
from replication.incoming import resumable
from replication.transfer import LEVEL, should_compress
from replication.wire import (
    ENCODING_HEADER,
    OBJECTS_PATH,
    OFFSET_HEADER,
    PARTIAL_PATH,
    SHA_HEADER,
    SIZE_HEADER,
    PartialHeld,
    TransferReceipt,
)

CHUNK = 2**20
SEND_SECONDS = 120.0
# Time allowed grows with size: a 2 GB instance on a slow WAN link is no failure.
SLOWEST_RATE = 1e6  # bytes/s


class Ask(Protocol):
    """One request to the receiving member (``Discovery.ask_member`` bound to it)."""

    def __call__(
        self, method: str, path: str, *, data: Any = None,
        headers: dict[str, str] | None = None, seconds: float = ...,
    ) -> Awaitable[Any]: ...


def _read_chunk(fh: IO[bytes], compressor: Any) -> tuple[int, bytes]:
    raw = fh.read(CHUNK)
    if compressor is None:
        return len(raw), raw
    if not raw:
        return 0, compressor.flush()
    return len(raw), compressor.compress(raw)


async def _body(
    fh: IO[bytes], offset: int, compress: bool, on_bytes: Callable[[int], None],
    damage: list[TamperedObject],
) -> AsyncIterator[bytes]:
    fh.seek(offset)
    compressor = zstandard.ZstdCompressor(level=LEVEL).compressobj() if compress else None
    while True:
        try:
            raw, out = await asyncio.to_thread(_read_chunk, fh, compressor)
        except TamperedObject as exc:
            # The HTTP client may wrap what a body raises: the caller re-raises this.
            damage.append(exc)
            raise
        if out:
            yield out
        if not raw:
            return
        on_bytes(raw)


async def send_object(
    ask: Ask, open_object: Callable[[], IO[bytes]], sha256: str, transfer_syntax_uid: str,
    on_bytes: Callable[[int], None] = lambda n: None, ask_first: bool = False,
) -> str:
    """Deliver the object ``open_object`` reads (its plaintext: ``Storage.open_object``);
    returns the receiver's status ("stored", "duplicate", or "held" when it had the whole
    object already). ``ask_first``: an earlier try may have been stored though its answer was
    lost (the receiver stopped, the link broke after the body), so the receiver is asked
    first whether it holds the object, as for every resumable one. Raises what ``ask``
    raises, TamperedObject when the stored object fails its check, OSError when it cannot
    be read, RemoteAnswerInvalid on a malformed answer."""
    fh = await asyncio.to_thread(open_object)
    try:
        return await _send(ask, fh, sha256, transfer_syntax_uid, on_bytes, ask_first)
    finally:
        fh.close()


async def _send(
    ask: Ask, fh: IO[bytes], sha256: str, transfer_syntax_uid: str,
    on_bytes: Callable[[int], None], ask_first: bool,
) -> str:
    size = await asyncio.to_thread(fh.seek, 0, io.SEEK_END)
    offset = 0
    if resumable(size) or ask_first:
        held = PartialHeld.from_json(await ask("GET", PARTIAL_PATH.format(sha256=sha256)))
        if held.stored:
            return "held"
        if resumable(size):
            offset = max(0, min(held.offset, size))
    compress = should_compress(transfer_syntax_uid)
    headers = {SHA_HEADER: sha256, SIZE_HEADER: str(size), OFFSET_HEADER: str(offset)}
    if compress:
        headers[ENCODING_HEADER] = "zstd"
    damage: list[TamperedObject] = []
    try:
        answer = await ask(
            "PUT", OBJECTS_PATH.format(sha256=sha256),
            data=_body(fh, offset, compress, on_bytes, damage), headers=headers,
            seconds=SEND_SECONDS + (size - offset) / SLOWEST_RATE,
        )
    except Exception:
        if damage:
            raise damage[0] from None
        raise
    return TransferReceipt.from_json(answer).status
