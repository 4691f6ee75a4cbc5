"""Storage with an at-rest key: one read interface over sealed and plain objects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.at_rest import HEADER_LEN, ObjectKey, is_sealed
from node.storage import Storage, TamperedObject, sha256_hex

KEY = ObjectKey(os.urandom(32))
DATA = bytes(128) + b"DICM" + os.urandom(300_000)
SHA = sha256_hex(DATA)


def sealed_store(root: Path) -> Storage:
    storage = Storage(root, KEY, seal_new=True)
    storage.prepare()
    return storage


def test_sealed_write_reads_back_through_every_reader(tmp_path: Path) -> None:
    storage = sealed_store(tmp_path)
    storage.write(DATA, SHA)
    raw = storage.path(SHA).read_bytes()
    assert is_sealed(raw) and DATA[200:264] not in raw
    assert storage.read(SHA) == DATA
    with storage.open_object(SHA) as fh:
        fh.seek(100_000)
        assert fh.read(10) == DATA[100_000:100_010]
    plain = storage.plain_file(SHA)
    try:
        assert plain.path.read_bytes() == DATA  # pydicom and pynetdicom open it by path
        assert not str(plain.path).startswith(str(tmp_path))  # memory, not the data dir
    finally:
        plain.close()
    assert not any(DATA[200:264] in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_plain_objects_stay_readable_and_are_resealed(tmp_path: Path) -> None:
    Storage(tmp_path).prepare()
    Storage(tmp_path).write(DATA, SHA)
    storage = sealed_store(tmp_path)
    assert storage.plain_file(SHA).path == storage.path(SHA)  # no copy for a plain object
    assert storage.read(SHA) == DATA
    assert storage.reseal(SHA)
    assert is_sealed(storage.path(SHA).read_bytes()[:HEADER_LEN])
    assert storage.read(SHA) == DATA
    assert not storage.reseal(SHA)  # once is enough


def test_tampering_is_reported_with_the_objects_name(tmp_path: Path) -> None:
    storage = sealed_store(tmp_path)
    storage.write(DATA, SHA)
    path = storage.path(SHA)
    damaged = bytearray(path.read_bytes())
    damaged[HEADER_LEN + 10] ^= 0x80
    path.write_bytes(bytes(damaged))
    with pytest.raises(TamperedObject) as info:
        storage.read(SHA)
    assert info.value.sha256 == SHA and SHA[:12] in str(info.value)
    with pytest.raises(TamperedObject):
        storage.plain_file(SHA)


def test_a_wrong_key_cannot_read_and_says_so(tmp_path: Path) -> None:
    sealed_store(tmp_path).write(DATA, SHA)
    other = Storage(tmp_path, ObjectKey(os.urandom(32)))
    with pytest.raises(TamperedObject):
        other.read(SHA)
