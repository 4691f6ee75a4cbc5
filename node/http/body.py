"""Every HTTP request body that may become an object, received the one safe way.

The body streams into a :class:`node.body_file.BodyFile` (a file under the data dir's
``tmp/``, hashed, sealed at rest if new objects are, fdatasynced), within a size limit,
and only a body that arrived whole (as many bytes as its Content-Length says, or a
chunked body that ended properly) is handed back for ingest. Whatever goes wrong, the
file is deleted: nothing of a refused body is kept anywhere. Upload, STOW-RS and media
import all take their bodies through :func:`receive_body`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from node.body_file import BatchedFeed, BodyFile
from node.storage import Storage, StorageError, StorageFull

# A body that sends nothing for this long is given up (the client is gone or stuck).
BODY_IDLE_SECONDS = 60.0


class BodyRefused(Exception):
    """The body cannot be stored; ``response`` says why (4xx or 5xx, one line)."""

    def __init__(self, response: web.HTTPException, reason: str) -> None:
        super().__init__(reason)
        self.response = response
        self.reason = reason


@dataclass(frozen=True)
class ReceivedBody:
    """A durable temporary file holding the whole body; the caller ingests or discards it."""

    path: Path
    sha256: str
    size: int


def _refused(status: type[web.HTTPException], reason: str) -> BodyRefused:
    return BodyRefused(status(text=reason + "\n"), reason)


def _too_large(limit: int, actual: int) -> BodyRefused:
    reason = f"body larger than the limit of {limit} bytes"
    response = web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=actual,
                                             text=reason + "\n")
    response.force_close()  # the rest of the body is not worth reading
    return BodyRefused(response, reason)


async def receive_body(request: web.Request, storage: Storage, limit: int,
                       idle: float = BODY_IDLE_SECONDS) -> ReceivedBody:
    """Stream ``request``'s body to a durable temporary file. Raises BodyRefused (413
    past ``limit``, 400 for a body that ended early or is malformed, 408 when it stalls,
    507 on a full disk, 500 when it cannot be written); nothing is kept then."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit, declared)
    try:
        body = await asyncio.to_thread(BodyFile, storage)
    except StorageError as exc:
        raise _storage_refusal(exc) from None
    kept = False
    try:
        await _stream(request, body, limit, idle)
        if declared is not None and body.written != declared:
            raise _refused(web.HTTPBadRequest,
                           f"body ended at {body.written} of {declared} bytes")
        sha = await asyncio.to_thread(body.finish)
        kept = True
        return ReceivedBody(body.path, sha, body.written)
    except StorageError as exc:
        raise _storage_refusal(exc) from None
    finally:
        if not kept:
            await asyncio.shield(asyncio.to_thread(body.abandon))


async def _stream(request: web.Request, body: BodyFile, limit: int, idle: float) -> None:
    feed = BatchedFeed(body)
    received = 0
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await request.content.readany()
        except TimeoutError:
            raise _refused(web.HTTPRequestTimeout,
                           f"body stalled for {idle:g} s at {received} bytes") from None
        except (HttpProcessingError, ConnectionError) as exc:
            # aiohttp's parser: a chunked body that breaks its framing, or a connection
            # that ended before the body did. Either way the body is not whole.
            raise _refused(web.HTTPBadRequest,
                           f"body ended early at {received} bytes ({type(exc).__name__})"
                           ) from None
        if not chunk:
            break
        received += len(chunk)
        if received > limit:
            raise _too_large(limit, received)
        await feed(chunk)
    await feed.flush()


def _storage_refusal(exc: StorageError) -> BodyRefused:
    if isinstance(exc, StorageFull):
        return _refused(web.HTTPInsufficientStorage, "archive storage is full")
    return _refused(web.HTTPInternalServerError, "the archive could not write the body")

