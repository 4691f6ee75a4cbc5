"""Moving one instance between members over the mesh API: the receiving side.

The sender streams the stored Part 10 bytes (``replication.outgoing``), zstd-compressed
unless their transfer syntax is already compressed, with their SHA-256 and size. The
receiver decodes, hashes and writes the body as it arrives (``replication.incoming``),
checks the hash, stores through the same ingest as C-STORE (durable write, then index),
and only then answers. Resending is harmless: the same bytes again are a duplicate.
Large instances resume: ``GET .../partial`` says how much of one is held here.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from dataclasses import asdict, dataclass
from typing import NoReturn

import zstandard
from aiohttp import web
from aiohttp.http_exceptions import PayloadEncodingError

from node.archive import Archive, IngestStatus
from node.body_file import BATCH, BatchedFeed
from node.dicom_header import InvalidDataset
from node.index import IndexFailure, IndexFull
from node.storage import StorageError, StorageFull, TamperedObject, sha256_hex
from node.transcode import UNCOMPRESSED
from replication.incoming import (
    Incoming,
    IncomingError,
    OffsetMismatch,
    resumable,
)
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

log = logging.getLogger(__name__)
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
DEFLATED = "1.2.840.10008.1.2.1.99"
LEVEL = 3  # fast; the gain over higher levels is small for pixel data


def should_compress(transfer_syntax_uid: str) -> bool:
    """Compressed pixel data, and deflated data sets, gain nothing from zstd."""
    return transfer_syntax_uid in UNCOMPRESSED and transfer_syntax_uid != DEFLATED


def encode(data: bytes, transfer_syntax_uid: str) -> tuple[bytes, dict[str, str]]:
    """The body a sender streams for ``data``, in one piece (for measurements)."""
    headers = {SHA_HEADER: sha256_hex(data)}
    if should_compress(transfer_syntax_uid):
        headers[ENCODING_HEADER] = "zstd"
        return zstandard.ZstdCompressor(level=LEVEL).compress(data), headers
    return data, headers


@dataclass
class Receipts:
    """What this node received over the mesh since it started (for operators, and for
    tests that prove nothing acknowledged is sent twice)."""

    stored: int = 0
    duplicate: int = 0
    conflict: int = 0
    resumed: int = 0  # bodies that continued a partial transfer
    bytes: int = 0  # raw bytes of bodies received whole (a resumed one: only its rest)

    def as_json(self) -> dict[str, int]:
        return asdict(self)


def _int_header(request: web.Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a number") from None
    if number < 0:
        raise web.HTTPBadRequest(text=f"{name} must not be negative")
    return number


async def _receive(request: web.Request, incoming: Incoming) -> None:
    feed = BatchedFeed(incoming)
    async for chunk in request.content.iter_any():
        await feed(chunk)
    await feed.flush()


def routes(archive: Archive, receipts: Receipts) -> list[web.RouteDef]:
    storage = archive.storage
    # A resumable part has one writer at a time; a second sender waits its turn.
    receiving: set[str] = set()

    def object_sha(request: web.Request) -> str:
        sha = request.match_info["sha256"]
        if not _SHA_RE.match(sha):
            raise web.HTTPBadRequest(text="object hash malformed")
        return sha


    def drop_moot_part(sha: str) -> None:
        """A part of an object stored meanwhile by another way (another sender, C-STORE)
        would otherwise wait for the start-up sweep."""
        storage.partial_path(sha).unlink(missing_ok=True)

    async def partial(request: web.Request) -> web.Response:
        sha = object_sha(request)
        indexed = bool(await archive.index.sops_with_sha(sha))
        if indexed and await asyncio.to_thread(storage.exists, sha):
            if sha not in receiving:
                await asyncio.to_thread(drop_moot_part, sha)
            return web.json_response(PartialHeld(stored=True, offset=0).to_json())
        held = await asyncio.to_thread(storage.partial_held, sha)
        return web.json_response(PartialHeld(stored=False, offset=held).to_json())

    async def take_body(request: web.Request, incoming: Incoming) -> None:
        finished = False
        try:
            await _receive(request, incoming)
            await asyncio.to_thread(incoming.finish)
            finished = True
        finally:
            if not finished:
                await asyncio.to_thread(incoming.abandon)
        receipts.bytes += incoming.written
        if incoming.offset:
            receipts.resumed += 1

    async def put_object(request: web.Request) -> web.Response:
        sha = object_sha(request)
        if request.headers.get(SHA_HEADER) != sha:
            raise web.HTTPBadRequest(text="object hash missing or malformed")
        size = _int_header(request, SIZE_HEADER)
        exclusive = resumable(size)
        if exclusive:
            if sha in receiving:
                raise web.HTTPServiceUnavailable(text="this object is being received already")
            receiving.add(sha)
        try:
            return await store(request, sha, size)
        finally:
            if exclusive:
                receiving.discard(sha)

    async def store(request: web.Request, sha: str, size: int | None) -> web.Response:
        offset = _int_header(request, OFFSET_HEADER) or 0
        encoding = request.headers.get(ENCODING_HEADER)
        try:
            incoming = await asyncio.to_thread(Incoming, storage, sha, offset, size, encoding)
            if offset:
                log.info("resuming %s at %d of %s bytes", sha[:12], offset, size)
            await take_body(request, incoming)
            result = await asyncio.to_thread(
                archive.ingest_file, incoming.path, sha, f"mesh:{request['peer'][:15]}"
            )
        except (ConnectionResetError, PayloadEncodingError) as exc:
            # The sender went away mid-body; a resumable part stays for its next try.
            log.info("transfer of %s broke off: %s", sha[:12], exc)
            raise web.HTTPBadRequest(text="body broke off") from None
        except OffsetMismatch as exc:
            raise web.HTTPRequestRangeNotSatisfiable(text=f"resume from {exc.held}") from None
        except IncomingError as exc:
            raise web.HTTPUnprocessableEntity(text=str(exc)) from None
        except InvalidDataset as exc:
            # 415, not 422 (a damaged transfer, worth another try): these bytes will never
            # be stored here, and the sender parks the copy (replication/service.py).
            raise web.HTTPUnsupportedMediaType(text=f"not a storable instance: {exc}") from None
        except (StorageFull, IndexFull):
            raise web.HTTPInsufficientStorage(text="archive storage is full") from None
        except (StorageError, IndexFailure) as exc:
            raise web.HTTPInternalServerError(text=f"cannot store: {exc}") from None
        if result.status is IngestStatus.CONFLICT:
            receipts.conflict += 1
            raise web.HTTPConflict(text="another version of this instance is stored here")
        if result.status is IngestStatus.TOMBSTONED:
            raise web.HTTPGone(text="the study of this instance was deleted from the mesh")
        if result.status is IngestStatus.DUPLICATE:
            receipts.duplicate += 1
            if resumable(size):  # then this request holds its receiving slot
                await asyncio.to_thread(drop_moot_part, sha)
        else:
            receipts.stored += 1
        return web.json_response(TransferReceipt(result.status.value).to_json())

    async def get_object(request: web.Request) -> web.StreamResponse:
        """The stored bytes of an object, for a member retrieving a study it lacks."""
        sha = object_sha(request)
        if not await archive.index.sops_with_sha(sha):
            raise web.HTTPNotFound(text="no such object here")
        try:
            fh = await asyncio.to_thread(storage.open_object, sha)
        except FileNotFoundError:
            raise web.HTTPNotFound(text="no such object here") from None
        except TamperedObject as exc:
            await set_aside(exc)
        try:
            size = await asyncio.to_thread(fh.seek, 0, io.SEEK_END)
            fh.seek(0)
            try:
                # Most objects fit in the first read: their damage is still an answer.
                chunk = await asyncio.to_thread(fh.read, BATCH)
            except TamperedObject as exc:
                await set_aside(exc)
            rsp = web.StreamResponse(headers={SHA_HEADER: sha, SIZE_HEADER: str(size)})
            rsp.content_length = size
            await rsp.prepare(request)
            while chunk:
                await rsp.write(chunk)
                try:
                    chunk = await asyncio.to_thread(fh.read, BATCH)
                except TamperedObject as exc:
                    # Too late for a status: the body stops short of its length, so the
                    # peer sees it break off and fetches from another holder.
                    log.error("object %s not served whole: %s", sha[:12], exc)
                    await archive.set_aside(exc.sha256, str(exc))
                    rsp.force_close()
                    return rsp
        finally:
            fh.close()
        await rsp.write_eof()
        return rsp

    async def set_aside(damaged: TamperedObject) -> NoReturn:
        log.error("object %s not served: %s", damaged.sha256[:12], damaged)
        await archive.set_aside(damaged.sha256, str(damaged))
        raise web.HTTPInternalServerError(text="object damaged here; ask another holder")

    return [web.put(OBJECTS_PATH, put_object), web.get(OBJECTS_PATH, get_object),
            web.get(PARTIAL_PATH, partial)]
