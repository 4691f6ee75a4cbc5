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

import os
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
from node.body_file import BodyFile
from node.storage import Storage
from replication.errors import RemoteReplicationError

# Smaller instances are cheaper to resend than to resume (a round trip, and a re-hash
# of the part already held).
RESUME_MIN = 8 * 2**20
_READ = 2**20


class IncomingError(RemoteReplicationError, ValueError):
    """The body cannot become the announced object (bad encoding, wrong size or hash):
    the sender's (or, fetching, the holder's) bytes, so the next try goes elsewhere."""


class OffsetMismatch(IncomingError):
    """The sender starts beyond what is held here; ``held`` says where it must start."""

    def __init__(self, held: int) -> None:
        super().__init__(f"{held} bytes held here")
        self.held = held


class Incoming(BodyFile):
    """The generic streaming file (``node/body_file.py``) plus what the mesh adds:
    decoding, resuming a part, and a hash and size announced in advance."""

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
        super().__init__(storage, storage.partial_path(sha256) if self.resumable else None,
                         resume=self.resumable)
        if self.resumable:
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
                self.close()
                raise
        self.offset = offset

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
        if not offset:
            self.start_sealed()
            return
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

    def feed(self, chunk: bytes) -> None:
        if self._decoder is not None:
            try:
                chunk = self._decoder.decompress(chunk)
            except zstandard.ZstdError as exc:
                raise IncomingError(f"cannot decode the body: {exc}") from None
        if self.size is not None and self.offset + self.written + len(chunk) > self.size:
            raise IncomingError("body longer than the announced size")
        super().feed(chunk)

    def finish(self) -> Path:  # type: ignore[override]
        """The whole object is here and matches its hash: make it durable, return its
        path (for ingest). On a wrong hash the file is deleted: a resume from a corrupt
        part must start again from nothing."""
        if self._decoder is not None and not self._decoder.eof:
            raise IncomingError("body ended inside a compressed frame")
        total = self.offset + self.written
        if self.size is not None and total != self.size:
            raise IncomingError(f"body ended at {total} of {self.size} bytes")
        if super().finish() != self.sha256:
            self.path.unlink(missing_ok=True)
            raise IncomingError("bytes do not match their SHA-256")
        return self.path

    def abandon(self) -> None:
        """The body broke off: keep a resumable part for the next attempt, drop the rest."""
        if self.resumable:
            self.close()
        else:
            super().abandon()


def resumable(size: int | None) -> bool:
    """Large objects keep a part that outlives a broken transfer; small ones start over."""
    return size is not None and size >= RESUME_MIN
