"""Moving one instance between members over the mesh API.

The sender PUTs the stored Part 10 bytes, zstd-compressed unless their transfer syntax
is already compressed, with their SHA-256. The receiver decompresses, checks the hash,
stores through the same ingest as C-STORE (durable write, then index), and only then
answers. Resending is harmless: the same bytes again are a duplicate.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import zstandard
from aiohttp import web

from node.archive import Archive, IngestStatus
from node.dicom_header import InvalidDataset
from node.index import IndexFailure, IndexFull
from node.storage import StorageError, StorageFull, sha256_hex
from node.transcode import UNCOMPRESSED

OBJECTS_PATH = "/mesh/objects/{sha256}"
SHA_HEADER = "X-Pacsmesh-Sha256"
# Our own header rather than Content-Encoding, so no HTTP layer decodes it behind our back.
ENCODING_HEADER = "X-Pacsmesh-Encoding"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
DEFLATED = "1.2.840.10008.1.2.1.99"
_LEVEL = 3  # fast; the gain over higher levels is small for pixel data


class TransferRefused(RuntimeError):
    """The receiver answered that it will not take this instance."""


def should_compress(transfer_syntax_uid: str) -> bool:
    """Compressed pixel data, and deflated data sets, gain nothing from zstd."""
    return transfer_syntax_uid in UNCOMPRESSED and transfer_syntax_uid != DEFLATED


def encode(data: bytes, transfer_syntax_uid: str) -> tuple[bytes, dict[str, str]]:
    headers = {SHA_HEADER: sha256_hex(data)}
    if should_compress(transfer_syntax_uid):
        headers[ENCODING_HEADER] = "zstd"
        return zstandard.ZstdCompressor(level=_LEVEL).compress(data), headers
    return data, headers


def decode(body: bytes, encoding: str | None) -> bytes:
    if encoding is None or encoding == "identity":
        return body
    if encoding != "zstd":
        raise ValueError(f"unknown encoding {encoding!r}")
    return zstandard.ZstdDecompressor().decompress(body)


async def read_for_sending(path: Path, transfer_syntax_uid: str) -> tuple[bytes, dict[str, str]]:
    data = await asyncio.to_thread(path.read_bytes)
    return await asyncio.to_thread(encode, data, transfer_syntax_uid)


def routes(archive: Archive) -> list[web.RouteDef]:
    async def put_object(request: web.Request) -> web.Response:
        sha = request.match_info["sha256"]
        if not _SHA_RE.match(sha) or request.headers.get(SHA_HEADER) != sha:
            raise web.HTTPBadRequest(text="object hash missing or malformed")
        body = await request.read()
        try:
            data = await asyncio.to_thread(decode, body, request.headers.get(ENCODING_HEADER))
        except (ValueError, zstandard.ZstdError) as exc:
            raise web.HTTPBadRequest(text=f"cannot decode the body: {exc}") from None
        if sha256_hex(data) != sha:
            raise web.HTTPUnprocessableEntity(text="bytes do not match their SHA-256")
        source = f"mesh:{request['peer'][:15]}"
        try:
            result = await asyncio.to_thread(archive.ingest, data, source)
        except InvalidDataset as exc:
            raise web.HTTPUnprocessableEntity(text=f"not a storable instance: {exc}") from None
        except (StorageFull, IndexFull):
            raise web.HTTPInsufficientStorage(text="archive storage is full") from None
        except (StorageError, IndexFailure) as exc:
            raise web.HTTPInternalServerError(text=f"cannot store: {exc}") from None
        if result.status is IngestStatus.CONFLICT:
            raise web.HTTPConflict(text="another version of this instance is stored here")
        if result.status is IngestStatus.TOMBSTONED:
            raise web.HTTPGone(text="the study of this instance was deleted from the mesh")
        return web.json_response({"status": result.status.value})

    return [web.put(OBJECTS_PATH, put_object)]
