"""Encryption at rest in a real node: DCMTK stores and retrieves, the disk holds only
sealed objects, keys are checked at start, and a tampered object is caught on read."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from node.at_rest import is_sealed
from node.at_rest_keys import KEY_FILE, KEYS_DIR, load_key
from node.datadir import INDEX_FILE
from node.storage import Storage
from tests.mesh_support import wait_for
from tests.support import (
    NodeProcess,
    data_store_dir,
    dataset_bytes,
    getscu_instance,
    getscu_run,
    received_files,
    sop_instance_uid,
    storescu,
    transfer_syntax,
)

ENCRYPT = ("--encrypt-at-rest",)
# Explicit VR little endian (getscu +B takes them bit for bit), one chunk to many.
PLAIN_SAMPLES = ["SC_rgb.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm"]
COMPRESSED = "JPEG-LL.dcm"  # sent decompressed to getscu, which takes only uncompressed
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def sample(name: str) -> Path:
    return data_store_dir() / name


def objects(node: NodeProcess) -> dict[str, Path]:
    return {p.stem: p for p in (node.data_dir / "objects").rglob("*.dcm")}


def plaintext(node: NodeProcess, path: Path, passphrase: bytes | None = None) -> bytes:
    """What the node's storage reads for a stored object (the test reads with its key)."""
    storage = Storage(node.data_dir, load_key(node.data_dir, False, passphrase))
    with storage.open_file(path, path.stem) as fh:
        return fh.read()


def assert_sealed_and_sound(node: NodeProcess, passphrase: bytes | None = None) -> None:
    """Every object sealed (no DICM, no patient name on disk), its plaintext its name."""
    names = {str(dcmread(sample(n), stop_before_pixels=True).PatientName).encode()
             for n in [*PLAIN_SAMPLES, COMPRESSED, "liver.dcm"]}
    for sha, path in objects(node).items():
        raw = path.read_bytes()
        assert is_sealed(raw) and raw[128:132] != b"DICM"
        assert not any(name in raw for name in names)
        assert hashlib.sha256(plaintext(node, path, passphrase)).hexdigest() == sha


def store(node: NodeProcess, names: list[str]) -> None:
    before = set(objects(node))
    assert storescu(node, [sample(n) for n in names]) == []
    assert len(set(objects(node)) - before) == len(names)


def stored_path(node: NodeProcess, name: str, passphrase: bytes | None = None) -> Path:
    """The object file of sample ``name`` (found by its SOP Instance UID)."""
    uid = sop_instance_uid(sample(name))
    for path in objects(node).values():
        header = dcmread(io.BytesIO(plaintext(node, path, passphrase)), stop_before_pixels=True)
        if str(header.SOPInstanceUID) == uid:
            return path
    raise AssertionError(f"{name} not stored")


def stored_dataset(
    node: NodeProcess, name: str, scratch: Path, passphrase: bytes | None = None
) -> bytes:
    """The data set the node holds for sample ``name``, as it was received."""
    copy = scratch / f"{name}.stored"
    copy.write_bytes(plaintext(node, stored_path(node, name, passphrase), passphrase))
    return dataset_bytes(copy)


def retrieve_bit_exact(node: NodeProcess, out: Path) -> None:
    for name in PLAIN_SAMPLES:
        uid = sop_instance_uid(sample(name))
        received = getscu_instance(node, out / name, uid)
        assert dataset_bytes(received) == stored_dataset(node, name, out)


def integrity_audit(node: NodeProcess) -> str:
    """The details of the audit trail's integrity rows (read-only, beside the node)."""
    db = sqlite3.connect(f"file:{node.data_dir / INDEX_FILE}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT detail FROM audit WHERE action = 'integrity'").fetchall()
    finally:
        db.close()
    return " ".join(r[0] for r in rows)


@pytest.fixture
def sealed_node(make_node: Callable[..., NodeProcess]) -> NodeProcess:
    node = make_node(extra_args=ENCRYPT).start()
    store(node, [*PLAIN_SAMPLES, COMPRESSED])
    return node


def test_stored_objects_are_sealed_and_retrieved_bit_exact_across_a_restart(
    sealed_node: NodeProcess, tmp_path: Path
) -> None:
    node = sealed_node
    keys = node.data_dir / KEYS_DIR
    assert (keys.stat().st_mode & 0o777) == 0o700
    assert ((keys / KEY_FILE).stat().st_mode & 0o777) == 0o600
    assert_sealed_and_sound(node)
    assert not any((node.data_dir / "tmp").iterdir())
    retrieve_bit_exact(node, tmp_path / "first")
    # Decompressed on the way out: read from the sealed object through memory.
    received = getscu_instance(node, tmp_path / "jpeg", sop_instance_uid(sample(COMPRESSED)))
    assert transfer_syntax(received) in UNCOMPRESSED

    node.stop()
    node.start()
    retrieve_bit_exact(node, tmp_path / "again")
    assert (keys / KEY_FILE).read_bytes().hex() not in node.log()


def test_tampered_object_fails_its_retrieve_and_is_set_aside(
    sealed_node: NodeProcess, tmp_path: Path
) -> None:
    node = sealed_node
    victim = stored_path(node, "MR2_UNCR.dcm")
    damaged = bytearray(victim.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01  # one bit, deep inside the pixel data
    victim.write_bytes(bytes(damaged))
    before = node.status()["instances"]

    result = getscu_run(node, tmp_path / "out", sop_instance_uid(sample("MR2_UNCR.dcm")))
    assert received_files(tmp_path / "out") == {}, result.stderr
    wait_for(lambda: (node.data_dir / "quarantine" / victim.name).exists(), 10)
    assert not victim.exists()
    assert node.status()["instances"] == before - 1  # counts as missing: repairable
    log = node.log()
    assert f"object {victim.stem[:12]} is damaged" in log
    assert "Lestrade" not in log and "CompressedSamples" not in log
    wait_for(lambda: victim.stem in integrity_audit(node), 10)
    # The others are untouched and still come back.
    uid = sop_instance_uid(sample("SC_rgb.dcm"))
    received = getscu_instance(node, tmp_path / "sc", uid)
    assert dataset_bytes(received) == stored_dataset(node, "SC_rgb.dcm", tmp_path)


def test_scrub_finds_a_truncated_object(sealed_node: NodeProcess) -> None:
    node = sealed_node
    victim = stored_path(node, "US1_UNCR.dcm")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - (1 << 16) - 16])  # the last chunk dropped
    wait_for(lambda: (node.data_dir / "quarantine" / victim.name).exists(), 30)
    # Logged once the rows' removal is durable, a moment after the file moved.
    wait_for(lambda: "set aside" in node.log(), 30)


def test_passphrase_mode_refuses_a_wrong_passphrase(
    make_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse battery staple\n")
    node = make_node(extra_args=(*ENCRYPT, "--at-rest-passphrase-file", str(secret))).start()
    store(node, ["SC_rgb.dcm"])
    node.stop()
    assert not (node.data_dir / KEYS_DIR / KEY_FILE).exists()
    assert_sealed_and_sound(node, b"correct horse battery staple")
    assert b"correct horse" not in b"".join(
        p.read_bytes() for p in node.data_dir.rglob("*") if p.is_file())

    secret.write_text("wrong horse\n")
    with pytest.raises(RuntimeError, match="wrong at-rest passphrase"):
        node.start()
    node.extra_args = ENCRYPT
    with pytest.raises(RuntimeError, match="encrypted with a passphrase"):
        node.start()
    node.extra_args = ()
    node.env = {**os.environ, "PACSMESH_AT_REST_PASSPHRASE": "correct horse battery staple"}
    node.start()  # encryption off: the passphrase still opens what was sealed
    received = getscu_instance(node, tmp_path / "out", sop_instance_uid(sample("SC_rgb.dcm")))
    assert dataset_bytes(received) == stored_dataset(node, "SC_rgb.dcm", tmp_path,
                                                     b"correct horse battery staple")


def test_key_file_open_to_others_refuses_to_start(
    make_node: Callable[..., NodeProcess],
) -> None:
    node = make_node(extra_args=ENCRYPT).start()
    node.stop()
    os.chmod(node.data_dir / KEYS_DIR / KEY_FILE, 0o640)
    with pytest.raises(RuntimeError, match="readable by others"):
        node.start()


def test_turning_encryption_on_keeps_and_seals_what_was_stored(
    make_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = make_node().start()
    store(node, ["SC_rgb.dcm"])
    (old_sha, old_path), = objects(node).items()
    assert old_path.read_bytes()[128:132] == b"DICM"  # no key: stored as received
    node.stop()
    node.extra_args = ENCRYPT
    node.start()
    received = getscu_instance(node, tmp_path / "old", sop_instance_uid(sample("SC_rgb.dcm")))
    assert dataset_bytes(received) == stored_dataset(node, "SC_rgb.dcm", tmp_path)
    store(node, ["liver.dcm"])
    # Scrub seals the old object as it passes.
    wait_for(lambda: is_sealed(old_path.read_bytes()), 30)
    assert_sealed_and_sound(node)
    assert set(objects(node)) >= {old_sha}
