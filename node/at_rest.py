"""The at-rest file format: an object sealed in chunks with AES-256-GCM (pure code).

Layout of a sealed file::

    header (132 bytes): MAGIC | version | log2(chunk size) | salt (32) | zeros | MARK
    chunk 0 .. n-1:     AES-GCM(ciphertext || 16-byte tag), each of ``chunk`` plaintext
                        bytes except the last, which holds 1..chunk bytes (0 only when
                        the whole object is empty)

Each file gets its own key, HKDF(master key, salt), so nonces need only be unique within
a file: the chunk index is the nonce. The associated data of every chunk is the header,
the chunk index and a final flag (the STREAM construction): a flipped bit, chunks
reordered or swapped in from another file, a dropped tail, or a wrong key all fail
authentication on read.

``MARK`` sits where a Part 10 file has ``DICM`` (offset 128), and ``MAGIC`` starts with a
byte no data set starts with in practice, so a stored plaintext object can never be taken
for a sealed one, nor the other way round: data dirs may hold both.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"\x89PMAR\r\n\x1a"
MARK = b"PMAR"
VERSION = 1
HEADER_LEN = 132
SALT_LEN = 32
TAG_LEN = 16
KEY_LEN = 32
CHUNK_LOG2 = 16  # 64 KiB: 0.02 % of tags, and a small tail to redo on a resume
_PAD = HEADER_LEN - len(MARK) - (len(MAGIC) + 2 + SALT_LEN)
_FILE_KEY_INFO = b"pacsmesh at-rest v1 file key"


class Tampered(ValueError):
    """A sealed object fails authentication: damaged, truncated, reordered, or another key."""


def is_sealed(head: bytes) -> bool:
    """Whether ``head`` (at least the first HEADER_LEN bytes of a file) is a sealed object."""
    return len(head) >= HEADER_LEN and head[:len(MAGIC)] == MAGIC and head[128:132] == MARK


def chunk_size(header: bytes) -> int:
    if not is_sealed(header):
        raise Tampered("not a sealed object header")
    if header[len(MAGIC)] != VERSION:
        raise Tampered(f"unknown at-rest format version {header[len(MAGIC)]}")
    log2 = header[len(MAGIC) + 1]
    if not 10 <= log2 <= 24:
        raise Tampered(f"implausible chunk size 2**{log2}")
    return 1 << log2


def plaintext_size(header: bytes, sealed_size: int) -> int:
    """The object's size, from its sealed file's size (the chunk layout is fixed)."""
    step = chunk_size(header) + TAG_LEN
    body = sealed_size - HEADER_LEN
    if body < TAG_LEN:
        raise Tampered("sealed object shorter than one chunk")
    chunks = -(-body // step)
    if body - (chunks - 1) * step < TAG_LEN:
        raise Tampered("sealed object ends inside a chunk tag")
    return body - chunks * TAG_LEN


def part_plaintext(header: bytes, sealed_size: int) -> int:
    """Plaintext held in the complete chunks of a file still being written."""
    try:
        chunk = chunk_size(header)
    except Tampered:
        return 0
    return max(0, (sealed_size - HEADER_LEN) // (chunk + TAG_LEN)) * chunk


class ObjectKey:
    """The master key. Never logged, never written anywhere but the key file."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_LEN:
            raise ValueError(f"an at-rest key is {KEY_LEN} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "ObjectKey(<secret>)"

    def new_header(self, chunk_log2: int = CHUNK_LOG2) -> bytes:
        return (MAGIC + bytes((VERSION, chunk_log2)) + os.urandom(SALT_LEN)
                + bytes(_PAD) + MARK)

    def file_cipher(self, header: bytes) -> FileCipher:
        chunk = chunk_size(header)
        salt = header[len(MAGIC) + 2: len(MAGIC) + 2 + SALT_LEN]
        file_key = HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=salt,
                        info=_FILE_KEY_INFO).derive(self._key)
        return FileCipher(AESGCM(file_key), bytes(header[:HEADER_LEN]), chunk)


class FileCipher:
    """Seals and opens the chunks of one file."""

    def __init__(self, aead: AESGCM, header: bytes, chunk: int) -> None:
        self._aead = aead
        self.header = header
        self.chunk = chunk

    def _nonce_ad(self, index: int, final: bool) -> tuple[bytes, bytes]:
        counter = index.to_bytes(8, "big")
        return bytes(4) + counter, self.header + counter + (b"\x01" if final else b"\x00")

    def seal(self, index: int, data: bytes | memoryview, final: bool) -> bytes:
        nonce, ad = self._nonce_ad(index, final)
        return self._aead.encrypt(nonce, bytes(data), ad)

    def open(self, index: int, sealed: bytes, final: bool) -> bytes:
        nonce, ad = self._nonce_ad(index, final)
        try:
            return self._aead.decrypt(nonce, sealed, ad)
        except InvalidTag:
            raise Tampered(f"chunk {index} fails authentication") from None


class Sealer:
    """Seals a stream: full chunks as soon as more data follows them, the rest at
    :meth:`finish`. Resumes a file whose first ``index`` (non-final) chunks exist."""

    def __init__(self, cipher: FileCipher, index: int = 0) -> None:
        self._cipher = cipher
        self._index = index
        self._pending = bytearray()

    @property
    def sealed_plaintext(self) -> int:
        """Plaintext bytes sealed into full chunks so far (what a resume keeps)."""
        return self._index * self._cipher.chunk

    def update(self, data: bytes | memoryview) -> bytes:
        self._pending += data
        chunk = self._cipher.chunk
        if len(self._pending) <= chunk:
            return b""
        out = []
        view = memoryview(self._pending)
        start = 0
        # Strictly more than a chunk: the last chunk is only known at finish().
        while len(self._pending) - start > chunk:
            out.append(self._cipher.seal(self._index, view[start:start + chunk], False))
            self._index += 1
            start += chunk
        view.release()
        del self._pending[:start]
        return b"".join(out)

    def finish(self) -> bytes:
        sealed = self._cipher.seal(self._index, memoryview(self._pending), True)
        self._index += 1
        self._pending = bytearray()
        return sealed


def seal(key: ObjectKey, data: bytes | memoryview) -> bytes:
    """The sealed file for ``data``, whole."""
    header = key.new_header()
    sealer = Sealer(key.file_cipher(header))
    return b"".join((header, sealer.update(data), sealer.finish()))


def unseal(key: ObjectKey, sealed: bytes) -> bytes:
    """The plaintext of a whole sealed file; raises Tampered."""
    reader = SealedReader(key, io.BytesIO(sealed), len(sealed))
    return reader.read()


def read_full_chunks(key: ObjectKey, fh: BinaryIO, chunks: int) -> Iterator[bytes]:
    """The plaintext of the first ``chunks`` non-final chunks of a file still being
    written (a resumable transfer's part); raises Tampered."""
    fh.seek(0)
    cipher = key.file_cipher(fh.read(HEADER_LEN))
    step = cipher.chunk + TAG_LEN
    for index in range(chunks):
        sealed = fh.read(step)
        if len(sealed) != step:
            raise Tampered(f"chunk {index} is short")
        yield cipher.open(index, sealed, False)


class SealedReader(io.RawIOBase):
    """A read-only, seekable view of a sealed file's plaintext. ``fh`` is the sealed
    file, ``size`` its size. Authentication failures raise what ``error`` makes of the
    reason (``Tampered`` by default), on the read that meets them."""

    def __init__(self, key: ObjectKey, fh: BinaryIO, size: int,
                 error: Callable[[str], Exception] = Tampered) -> None:
        super().__init__()
        self._fh = fh
        self._error = error
        try:
            fh.seek(0)
            header = fh.read(HEADER_LEN)
            self.size = plaintext_size(header, size)
            self._cipher = key.file_cipher(header)
        except Tampered as exc:
            raise error(str(exc)) from None
        self._step = self._cipher.chunk + TAG_LEN
        self._chunks = max(1, -(-self.size // self._cipher.chunk))
        self._pos = 0
        self._cached = -1
        self._plain = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def _load(self, index: int) -> bytes:
        if index != self._cached:
            self._fh.seek(HEADER_LEN + index * self._step)
            sealed = self._fh.read(self._step)
            try:
                self._plain = self._cipher.open(index, sealed, index == self._chunks - 1)
            except Tampered as exc:
                raise self._error(str(exc)) from None
            self._cached = index
        return self._plain

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        if self._pos == 0 and end == self.size and self.size == 0:
            self._load(0)  # an empty object still has its final chunk to verify
        parts = []
        chunk = self._cipher.chunk
        while self._pos < end:
            index, skip = divmod(self._pos, chunk)
            plain = self._load(index)
            part = plain[skip: skip + end - self._pos]
            if not part:  # authentic but shorter than the layout says: not ours
                raise self._error(f"chunk {index} is shorter than its place")
            parts.append(part)
            self._pos += len(part)
        return b"".join(parts)

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()
