"""Streamed, resumable transfers between a real sender and a real receiver (HTTP on
loopback, real storage and SQLite index), broken off at chosen points."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from discovery.probe import Refused
from node.archive import Archive
from node.at_rest import HEADER_LEN, ObjectKey, is_sealed
from node.index import Index
from node.storage import Storage
from replication.incoming import RESUME_MIN
from replication.outgoing import Ask, send_object
from replication.transfer import OBJECTS_PATH, Receipts, routes, should_compress
from tests.support import free_port, one_file_per_instance, transfer_syntax
from tests.test_faults import make_ct

SENDER = "SENDERNODEID-TEST"


class Interrupted(RuntimeError):
    """The sender 'dies' after a number of bytes."""


@dataclass
class Receiver:
    archive: Archive
    receipts: Receipts
    ask: Ask
    url: str

    @property
    def storage(self) -> Storage:
        return self.archive.storage

    def partials(self) -> list[Path]:
        return list(self.storage.partial.iterdir())


@pytest.fixture(params=["plain", "sealed"])
async def receiver(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Receiver]:
    # Sealed: encryption at rest seals each chunk as it arrives, parts included.
    key = ObjectKey(os.urandom(32)) if request.param == "sealed" else None
    storage = Storage(tmp_path / "receiver", key, seal_new=key is not None)
    storage.prepare()
    index = await Index.open(tmp_path / "receiver" / "index.sqlite")
    archive, receipts = Archive(storage, index), Receipts()

    @web.middleware
    async def as_member(request: web.Request, handler: Any) -> web.StreamResponse:
        request["peer"] = SENDER  # what the mesh's TLS gate sets for a proven member
        return await handler(request)

    app = web.Application(middlewares=[as_member], client_max_size=2**34)
    app.router.add_routes(routes(archive, receipts))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession()

    async def ask(method: str, path: str, *, data: Any = None,
                  headers: dict[str, str] | None = None, seconds: float = 30.0) -> Any:
        async with asyncio.timeout(seconds):
            async with session.request(method, f"http://127.0.0.1:{port}{path}", data=data,
                                       headers=headers) as rsp:
                if rsp.status != 200:
                    raise Refused(rsp.status, await rsp.text())
                return await rsp.json()

    yield Receiver(archive, receipts, ask, f"http://127.0.0.1:{port}")
    await session.close()
    await runner.cleanup()
    await index.close()


@pytest.fixture(scope="module")
def big_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 MB of noise: uncompressed, so the body is zstd, and resumable."""
    path = make_ct(tmp_path_factory.mktemp("big") / "big.dcm", 7, 0, size=4096, noise=True)
    assert path.stat().st_size > 3 * RESUME_MIN
    return path


@cache
def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def size_of(path: Path) -> int:
    return path.stat().st_size


def identical(receiver: Receiver, path: Path) -> bool:
    """The receiver holds ``path``'s bytes (read through its storage: maybe sealed)."""
    sha = sha_of(path)
    stored = receiver.storage.path(sha)
    sealed = is_sealed(stored.read_bytes()[:HEADER_LEN])
    if sealed != receiver.storage.seal_new:
        return False
    return receiver.storage.read(sha) == path.read_bytes()


async def send(receiver: Receiver, path: Path, stop_after: int | None = None) -> tuple[str, int]:
    """Send ``path``; returns (status, raw bytes sent). Raises Interrupted after
    ``stop_after`` bytes, which drops the connection mid-body."""
    sent = 0

    def count(n: int) -> None:
        nonlocal sent
        sent += n
        if stop_after is not None and sent >= stop_after:
            raise Interrupted(f"sender gone after {sent} bytes")

    syntax = transfer_syntax(path)
    # The receiver may still be closing the broken body: it then answers 503, busy.
    for _ in range(50):
        try:
            status = await send_object(receiver.ask, lambda: path.open("rb"), sha_of(path), syntax,
                                       count)
            return status, sent
        except Refused as exc:
            if exc.status != 503:
                raise
            await asyncio.sleep(0.1)
    raise TimeoutError("receiver stayed busy")


async def interrupted(receiver: Receiver, path: Path, after: int) -> int:
    """Break a transfer off after ``after`` bytes; returns the size of the part kept."""
    with pytest.raises((Interrupted, aiohttp.ClientError)):
        await send(receiver, path, stop_after=after)
    part = receiver.storage.partial_path(sha_of(path))
    # The receiver writes what it had once it sees the connection drop.
    for _ in range(100):
        size = part.stat().st_size if part.exists() else 0
        await asyncio.sleep(0.05)
        if size and size == part.stat().st_size:
            return size
    raise TimeoutError("no partial file kept")


async def test_broken_transfer_resumes_from_the_offset_and_arrives_byte_identical(
    receiver: Receiver, big_ct: Path
) -> None:
    total = size_of(big_ct)
    kept = await interrupted(receiver, big_ct, after=12 * 2**20)
    assert 0 < kept < total
    # A sealed part keeps its complete chunks (plaintext bytes; the file holds their tags).
    held = receiver.storage.partial_held(sha_of(big_ct))
    assert held == kept if not receiver.storage.seal_new else 0 < held < kept
    assert (await receiver.archive.index.counts()).instances == 0  # a part is never indexed

    status, resent = await send(receiver, big_ct)
    assert status == "stored"
    assert resent == total - held  # only the rest crossed the wire
    assert receiver.receipts.resumed == 1
    assert identical(receiver, big_ct)
    assert receiver.partials() == []
    assert (await receiver.archive.index.counts()).instances == 1

    # Resending a complete instance is harmless, and costs a question, not the bytes.
    assert await send(receiver, big_ct) == ("held", 0)
    assert (await receiver.archive.index.counts()).instances == 1


async def test_corrupt_partial_is_caught_by_the_hash_and_sent_again_whole(
    receiver: Receiver, big_ct: Path
) -> None:
    kept = await interrupted(receiver, big_ct, after=10 * 2**20)
    part = receiver.storage.partial_path(sha_of(big_ct))
    with part.open("r+b") as fh:  # a flipped byte in what was kept (bad disk, bad RAM)
        fh.seek(kept // 2)
        byte = fh.read(1)
        fh.seek(kept // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(Refused) as refused:
        await send(receiver, big_ct)
    assert refused.value.status == 422
    assert receiver.partials() == []  # the bad part is gone: the next try starts afresh
    assert (await receiver.archive.index.counts()).instances == 0

    status, sent = await send(receiver, big_ct)
    assert (status, sent) == ("stored", size_of(big_ct))
    assert identical(receiver, big_ct)


async def test_no_instance_is_held_whole_in_memory_on_either_side(
    receiver: Receiver, big_ct: Path
) -> None:
    sha_of(big_ct)
    tracemalloc.start()
    try:
        assert (await send(receiver, big_ct))[0] == "stored"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Both ends run in this process: a few 1 MiB chunks each, in flight and in buffers.
    assert peak < 12 * 2**20 < size_of(big_ct) / 2


async def test_small_and_compressed_instances_stream_and_resend_as_duplicates(
    receiver: Receiver,
) -> None:
    files = one_file_per_instance()
    zstd = {should_compress(transfer_syntax(p)) for p in files}
    assert zstd == {True, False}  # bodies both zstd-encoded and sent as stored
    for path in files:
        assert (await send(receiver, path))[0] == "stored"
    assert (await send(receiver, files[0]))[0] == "duplicate"
    assert receiver.receipts.stored == len(files) and receiver.receipts.duplicate == 1
    for path in files:
        assert identical(receiver, path)
    assert list(receiver.storage.tmp.iterdir()) == receiver.partials() == []


async def test_a_copy_tried_before_asks_first_and_is_not_sent_twice(
    receiver: Receiver,
) -> None:
    """A first try stored at the receiver whose answer was lost (the receiver stopped, the
    link broke): the retry learns the copy is held and sends no body again."""
    path = one_file_per_instance()[0]
    assert (await send(receiver, path))[0] == "stored"
    sent = 0

    def count(n: int) -> None:
        nonlocal sent
        sent += n

    status = await send_object(receiver.ask, lambda: path.open("rb"), sha_of(path),
                               transfer_syntax(path), count, ask_first=True)
    assert (status, sent) == ("held", 0)
    assert receiver.receipts.stored == 1 and receiver.receipts.duplicate == 0
    path2 = one_file_per_instance()[1]
    fresh = await send_object(receiver.ask, lambda: path2.open("rb"), sha_of(path2),
                              transfer_syntax(path2), count, ask_first=True)
    assert fresh == "stored" and identical(receiver, path2)


@pytest.mark.parametrize("receiver", ["sealed"], indirect=True)
@pytest.mark.parametrize("where", [0.0, 0.75])
async def test_damaged_sealed_object_is_not_served_and_is_set_aside(
    receiver: Receiver, big_ct: Path, where: float
) -> None:
    assert (await send(receiver, big_ct))[0] == "stored"
    sha = sha_of(big_ct)
    stored = receiver.storage.path(sha)
    with stored.open("r+b") as fh:  # one flipped bit: at the start, or far past it
        fh.seek(HEADER_LEN + int(where * (stored.stat().st_size - HEADER_LEN)))
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))

    url = receiver.url + OBJECTS_PATH.format(sha256=sha)
    async with aiohttp.ClientSession() as session, session.get(url) as rsp:
        if where == 0.0:  # found before the answer starts: a status says so
            assert rsp.status == 500
        else:  # found mid-body: the body breaks off, short of its length
            assert rsp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await rsp.read()
    # Never served as good data, kept for inspection, and missing here: repairable.
    assert not stored.exists()
    assert (receiver.storage.quarantine / stored.name).exists()
    assert (await receiver.archive.index.counts()).instances == 0


def test_start_up_keeps_fresh_partials_and_drops_stale_or_finished_ones(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    storage.prepare()
    fresh, stale, done = "a" * 64, "b" * 64, "c" * 64
    for sha in (fresh, stale, done):
        storage.partial_path(sha).write_bytes(b"part of an instance")
    old = 1_000_000_000.0
    os.utime(storage.partial_path(stale), (old, old))
    storage.write(b"the whole object", done)

    assert storage.prepare() == 2
    assert [p.name for p in storage.partial.iterdir()] == [f"{fresh}.part"]
    assert [sha for sha, _ in storage.iter_objects()] == [done]  # never an object
