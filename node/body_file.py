"""A body arriving over the network, written to a file as it streams in.

One piece for every body that may become an object (an HTTP upload, a mesh transfer, a
fetch from a holder): the file lives on the data dir's file system (``tmp/`` unless the
caller names another place), so ingest renames it into ``objects/`` instead of copying;
its SHA-256 is computed as the bytes pass; it is sealed a chunk at a time when the node
seals objects at rest (``node/at_rest.py``), so no plaintext reaches the disk; and it is
fdatasynced before anyone may ingest it. Nothing is ever held whole in memory.

Blocking I/O: every method of :class:`BodyFile` runs on a worker thread;
:class:`BatchedFeed` is the loop-side helper that hands it the body in batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path
from typing import Protocol

from node.at_rest import Sealer
from node.storage import Storage, storage_error

BATCH = 2**20  # body bytes handed to the writer thread at a time


class BodyFile:
    def __init__(self, storage: Storage, path: Path | None = None,
                 resume: bool = False) -> None:
        """Open ``path`` (default: a fresh file under ``tmp/``). With ``resume`` the file
        may exist already and is left as it is for the caller to continue; otherwise it
        is new, and sealed from its first byte if new objects are. Raises StorageError."""
        self._storage = storage
        self._hash = hashlib.sha256()
        self._sealer: Sealer | None = None
        self.path = path if path is not None else storage.tmp / f"{uuid.uuid4().hex}.part"
        self.written = 0  # plaintext bytes fed to this body
        flags = os.O_RDWR | os.O_CREAT | (0 if resume else os.O_EXCL)
        try:
            self._fd = os.open(self.path, flags, 0o640)
        except OSError as exc:
            raise storage_error(exc) from exc
        if not resume and storage.seal_new:
            try:
                self.start_sealed()
            except BaseException:
                self.abandon()
                raise

    def start_sealed(self) -> None:
        """Empty the file and begin a sealed one under a fresh header."""
        key = self._storage.key
        assert key is not None
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
        """Append plaintext ``chunk``; raises StorageError (StorageFull on a full disk)."""
        self._hash.update(chunk)
        self._write(chunk if self._sealer is None else self._sealer.update(chunk))
        self.written += len(chunk)

    def finish(self) -> str:
        """Seal the last chunk, make the file durable and close it; return the SHA-256
        of its plaintext (of what a resumed caller hashed before, too)."""
        try:
            if self._sealer is not None:
                self._write(self._sealer.finish())
            os.fdatasync(self._fd)
        except OSError as exc:
            raise storage_error(exc) from exc
        finally:
            os.close(self._fd)
            self._fd = -1
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def abandon(self) -> None:
        """The body will not become an object: close and delete the file."""
        self.close()
        self._storage.discard(self.path)


class Feedable(Protocol):
    def feed(self, chunk: bytes) -> None: ...


class BatchedFeed:
    """Hands a body arriving in small network chunks to ``feed`` in ~1 MiB batches, on
    a worker thread: the loop never writes, and pays few hops."""

    def __init__(self, body: Feedable) -> None:
        self._body = body
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
            await asyncio.to_thread(self._body.feed, data)
