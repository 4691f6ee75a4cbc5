"""The at-rest file format, without a disk: round trips, and every kind of tampering."""

from __future__ import annotations

import io
import os

import pytest

from node.at_rest import (
    HEADER_LEN,
    MAGIC,
    TAG_LEN,
    ObjectKey,
    SealedReader,
    Sealer,
    Tampered,
    is_sealed,
    plaintext_size,
    read_full_chunks,
    seal,
    unseal,
)

KEY = ObjectKey(bytes(range(32)))
CHUNK = 1 << 16
STEP = CHUNK + TAG_LEN


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    sealed = seal(KEY, data)
    assert is_sealed(sealed)
    assert plaintext_size(sealed, len(sealed)) == size
    assert unseal(KEY, sealed) == data
    assert data[:64] not in sealed[HEADER_LEN:] or size < 16


def test_streaming_in_odd_pieces_equals_whole() -> None:
    data = os.urandom(2 * CHUNK + 5)
    header = KEY.new_header()
    sealer = Sealer(KEY.file_cipher(header))
    out = [header]
    for start in range(0, len(data), 7777):
        out.append(sealer.update(data[start:start + 7777]))
    out.append(sealer.finish())
    assert unseal(KEY, b"".join(out)) == data


def test_seek_and_partial_reads() -> None:
    data = os.urandom(3 * CHUNK + 100)
    sealed = seal(KEY, data)
    reader = SealedReader(KEY, io.BytesIO(sealed), len(sealed))
    reader.seek(CHUNK - 10)
    assert reader.read(30) == data[CHUNK - 10:CHUNK + 20]
    assert reader.tell() == CHUNK + 20
    reader.seek(-5, io.SEEK_END)
    assert reader.read() == data[-5:]
    assert reader.read(10) == b""


def test_resumed_part_keeps_full_chunks() -> None:
    data = os.urandom(2 * CHUNK + 9)
    header = KEY.new_header()
    sealer = Sealer(KEY.file_cipher(header))
    part = header + sealer.update(data[: CHUNK + 3])  # one full chunk sealed so far
    assert sealer.sealed_plaintext == CHUNK
    held = list(read_full_chunks(KEY, io.BytesIO(part), 1))
    assert held == [data[:CHUNK]]
    resumed = Sealer(KEY.file_cipher(header), index=1)
    whole = part + resumed.update(data[CHUNK:]) + resumed.finish()
    assert unseal(KEY, whole) == data


def _three_chunks() -> tuple[bytes, bytes]:
    data = os.urandom(2 * CHUNK + 1000)
    return data, seal(KEY, data)


def test_dropped_last_chunk_is_detected() -> None:
    _, sealed = _three_chunks()
    with pytest.raises(Tampered):
        unseal(KEY, sealed[: HEADER_LEN + 2 * STEP])


def test_cut_inside_a_chunk_is_detected() -> None:
    _, sealed = _three_chunks()
    with pytest.raises(Tampered):
        unseal(KEY, sealed[:-1])


def test_reordered_chunks_are_detected() -> None:
    _, sealed = _three_chunks()
    first = sealed[HEADER_LEN:HEADER_LEN + STEP]
    second = sealed[HEADER_LEN + STEP:HEADER_LEN + 2 * STEP]
    swapped = sealed[:HEADER_LEN] + second + first + sealed[HEADER_LEN + 2 * STEP:]
    with pytest.raises(Tampered):
        unseal(KEY, swapped)


@pytest.mark.parametrize("where", [0, 9, 20, HEADER_LEN + 5, -1])
def test_flipped_bit_is_detected(where: int) -> None:
    _, sealed = _three_chunks()
    damaged = bytearray(sealed)
    damaged[where] ^= 0x01
    with pytest.raises(Tampered):
        unseal(KEY, bytes(damaged))


def test_header_swapped_from_another_file_is_detected() -> None:
    _, one = _three_chunks()
    _, other = _three_chunks()
    with pytest.raises(Tampered):
        unseal(KEY, other[:HEADER_LEN] + one[HEADER_LEN:])


def test_chunk_swapped_from_another_file_is_detected() -> None:
    _, one = _three_chunks()
    _, other = _three_chunks()
    mixed = one[:HEADER_LEN + STEP] + other[HEADER_LEN + STEP:HEADER_LEN + 2 * STEP] \
        + one[HEADER_LEN + 2 * STEP:]
    with pytest.raises(Tampered):
        unseal(KEY, mixed)


def test_wrong_key_is_detected() -> None:
    _, sealed = _three_chunks()
    with pytest.raises(Tampered):
        unseal(ObjectKey(bytes(32)), sealed)


def test_empty_object_tampering_is_detected() -> None:
    sealed = seal(KEY, b"")
    with pytest.raises(Tampered):
        unseal(KEY, sealed[:-1] + bytes([sealed[-1] ^ 1]))


def test_part10_files_are_never_taken_for_sealed_ones() -> None:
    part10 = bytes(128) + b"DICM" + os.urandom(200)
    assert not is_sealed(part10)
    # Even a preamble that happens to start with our magic: DICM sits where MARK would.
    assert not is_sealed(MAGIC + bytes(120) + b"DICM" + os.urandom(200))
    assert not is_sealed(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + bytes(200))


def test_key_is_never_shown() -> None:
    assert "\\x" not in repr(KEY) and "00" not in repr(KEY)
