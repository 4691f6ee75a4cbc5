"""Sending one stored instance to a member: streamed from its file, resumed where it broke.

The file is read a chunk at a time and, when its transfer syntax is uncompressed,
zstd-compressed as it goes (one frame per request), so no instance is ever whole in
memory. For an instance large enough to resume, the receiver is first asked how much of
it it already holds, and the body starts there: the offset is in raw bytes, and the
compressed frame covers only the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any, Protocol

import zstandard

from replication.incoming import resumable
from replication.transfer import (
    ENCODING_HEADER,
    LEVEL,
    OBJECTS_PATH,
    OFFSET_HEADER,
    PARTIAL_PATH,
    SHA_HEADER,
    SIZE_HEADER,
    should_compress,
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
    path: Path, offset: int, compress: bool, on_bytes: Callable[[int], None]
) -> AsyncIterator[bytes]:
    fh = await asyncio.to_thread(path.open, "rb")
    try:
        fh.seek(offset)
        compressor = zstandard.ZstdCompressor(level=LEVEL).compressobj() if compress else None
        while True:
            raw, out = await asyncio.to_thread(_read_chunk, fh, compressor)
            if out:
                yield out
            if not raw:
                return
            on_bytes(raw)
    finally:
        fh.close()


async def send_object(
    ask: Ask, path: Path, sha256: str, transfer_syntax_uid: str,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> str:
    """Deliver the object stored at ``path``; returns the receiver's status ("stored",
    "duplicate", or "held" when it had the whole object already). Raises what ``ask``
    raises, OSError when the file cannot be read, ValueError on a malformed answer."""
    size = (await asyncio.to_thread(path.stat)).st_size
    offset = 0
    if resumable(size):
        held = await ask("GET", PARTIAL_PATH.format(sha256=sha256))
        if not isinstance(held, dict):
            raise ValueError(f"not an answer about a partial transfer: {held!r:.80}")
        if held.get("stored"):
            return "held"
        offset = max(0, min(int(held.get("offset", 0)), size))
    compress = should_compress(transfer_syntax_uid)
    headers = {SHA_HEADER: sha256, SIZE_HEADER: str(size), OFFSET_HEADER: str(offset)}
    if compress:
        headers[ENCODING_HEADER] = "zstd"
    answer = await ask(
        "PUT", OBJECTS_PATH.format(sha256=sha256),
        data=_body(path, offset, compress, on_bytes), headers=headers,
        seconds=SEND_SECONDS + (size - offset) / SLOWEST_RATE,
    )
    return str(answer.get("status", "")) if isinstance(answer, dict) else ""
