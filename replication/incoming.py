"""One instance arriving over the mesh: decoded, hashed and written as the body streams in.

Blocking I/O: every method runs on a worker thread. An instance of at least
``RESUME_MIN`` bytes is written to ``partial/<sha256>.part``, which outlives a broken
connection or a crash, so the sender can continue from its size; smaller ones go to a
fresh temporary file that a failed transfer deletes. Neither is ever indexed: only a
finished file whose SHA-256 matches its name is handed to ingest.

When the node seals objects at rest, the body is sealed as it arrives, a chunk at a time
(``node/at_rest.py``): no plaintext reaches the disk, and a part resumes from its last
complete chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path

import zstandard

from node.at_rest import (
    HEADER_LEN,
    TAG_LEN,
    Sealer,
    Tampered,
    chunk_size,
    is_sealed,
    part_plaintext,
    read_full_chunks,
)
from node.storage import Storage, storage_error

# Smaller instances are cheaper to resend than to resume (a round trip, and a re-hash
# of the part already held).
RESUME_MIN = 8 * 2**20
BATCH = 2**20  # body bytes handed to the writer thread at a time
_READ = 2**20


class IncomingError(ValueError):
    """The body cannot become the announced object (bad encoding, wrong size or hash)."""


class OffsetMismatch(IncomingError):
    """The sender starts beyond what is held here; ``held`` says where it must start."""

    def __init__(self, held: int) -> None:
        super().__init__(f"{held} bytes held here")
        self.held = held


class Incoming:
    def __init__(
        self, storage: Storage, sha256: str, offset: int, size: int | None,
        encoding: str | None,
    ) -> None:
        """Open the file the body goes to; raises OffsetMismatch, IncomingError or
        StorageError."""
        if encoding not in (None, "identity", "zstd"):
            raise IncomingError(f"unknown encoding {encoding!r}")
        self.sha256 = sha256
        self.size = size
        self.resumable = resumable(size)
        if offset and not self.resumable:
            raise OffsetMismatch(0)
        self._decoder = (
            zstandard.ZstdDecompressor().decompressobj() if encoding == "zstd" else None
        )
        self._hash = hashlib.sha256()
        self._storage = storage
        self._sealer: Sealer | None = None
        self.path = (storage.partial_path(sha256) if self.resumable
                     else storage.tmp / f"{uuid.uuid4().hex}.part")
        flags = os.O_RDWR | os.O_CREAT | (0 if self.resumable else os.O_EXCL)
        try:
            self._fd = os.open(self.path, flags, 0o640)
        except OSError as exc:
            raise storage_error(exc) from exc
        try:
            if storage.seal_new:
                self._resume_sealed(offset)
            else:
                held = os.fstat(self._fd).st_size
                if offset > held:
                    raise OffsetMismatch(held)
                os.ftruncate(self._fd, offset)  # a sender may choose to redo a tail
                self._rehash(offset)
        except BaseException:
            os.close(self._fd)
            raise
        self.offset = offset
        self.written = 0  # raw bytes of this body

    def _rehash(self, upto: int) -> None:
        """Hash what an earlier attempt left: the final check covers the whole file."""
        done = 0
        while done < upto:
            block = os.pread(self._fd, min(_READ, upto - done), done)
            if not block:
                raise IncomingError("partial file shorter than it claimed")
            self._hash.update(block)
            done += len(block)
        os.lseek(self._fd, upto, os.SEEK_SET)

    def _resume_sealed(self, offset: int) -> None:
        """Keep the part's complete chunks up to ``offset`` (a chunk boundary), or start
        a new sealed file; a part in the other format, or under another key, starts over."""
        key = self._storage.key
        assert key is not None
        held_size = os.fstat(self._fd).st_size
        header = os.pread(self._fd, HEADER_LEN, 0)
        held = part_plaintext(header, held_size) if is_sealed(header) else 0
        if offset > held:
            raise OffsetMismatch(held)
        if offset:
            chunk = chunk_size(header)
            if offset % chunk:
                raise OffsetMismatch(offset - offset % chunk)
            done = offset // chunk
            cipher = key.file_cipher(header)
            os.ftruncate(self._fd, HEADER_LEN + done * (chunk + TAG_LEN))
            try:
                with open(self._fd, "rb", closefd=False) as fh:
                    for block in read_full_chunks(key, fh, done):
                        self._hash.update(block)
            except Tampered:
                # Damaged, or another key's: as with a plain part, start from nothing.
                self.path.unlink(missing_ok=True)
                raise IncomingError("the part held here is damaged") from None
            os.lseek(self._fd, 0, os.SEEK_END)
            self._sealer = Sealer(cipher, index=done)
            return
        header = key.new_header()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._write(header)
        self._sealer = Sealer(key.file_cipher(header))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise storage_error(exc) from exc

    def feed(self, chunk: bytes) -> None:
        if self._decoder is not None:
            try:
                chunk = self._decoder.decompress(chunk)
            except zstandard.ZstdError as exc:
                raise IncomingError(f"cannot decode the body: {exc}") from None
        if self.size is not None and self.offset + self.written + len(chunk) > self.size:
            raise IncomingError("body longer than the announced size")
        self._hash.update(chunk)
        self._write(chunk if self._sealer is None else self._sealer.update(chunk))
        self.written += len(chunk)

    def finish(self) -> Path:
        """The whole object is here and matches its hash: make it durable, return its
        path (for ingest). On a wrong hash the file is deleted: a resume from a corrupt
        part must start again from nothing."""
        if self._decoder is not None and not self._decoder.eof:
            raise IncomingError("body ended inside a compressed frame")
        total = self.offset + self.written
        if self.size is not None and total != self.size:
            raise IncomingError(f"body ended at {total} of {self.size} bytes")
        try:
            if self._sealer is not None:
                self._write(self._sealer.finish())
            os.fdatasync(self._fd)
        except OSError as exc:
            raise storage_error(exc) from exc
        finally:
            os.close(self._fd)
            self._fd = -1
        if self._hash.hexdigest() != self.sha256:
            self.path.unlink(missing_ok=True)
            raise IncomingError("bytes do not match their SHA-256")
        return self.path

    def abandon(self) -> None:
        """The body broke off: keep a resumable part for the next attempt, drop the rest."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self.resumable:
            self.path.unlink(missing_ok=True)


def resumable(size: int | None) -> bool:
    """Large objects keep a part that outlives a broken transfer; small ones start over."""
    return size is not None and size >= RESUME_MIN


class BatchedFeed:
    """Hands a body arriving in small network chunks to :meth:`Incoming.feed` in
    ~1 MiB batches, on a worker thread: the loop never writes, and pays few hops."""

    def __init__(self, incoming: Incoming) -> None:
        self._incoming = incoming
        self._batch: list[bytes] = []
        self._pending = 0

    async def __call__(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._pending += len(chunk)
        if self._pending >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self._batch:
            data = b"".join(self._batch)
            self._batch, self._pending = [], 0
            await asyncio.to_thread(self._incoming.feed, data)
