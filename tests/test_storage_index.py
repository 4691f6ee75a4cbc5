"""The file store, the index schema, and start-up reconciliation of the two."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from pydicom import dcmread

from node.app import StartupError, open_archive
from node.datadir import INDEX_FILE
from node.dicom_header import InstanceKeys, read_keys
from node.index import SCHEMA_VERSION, AddOutcome, Index, IndexFailure
from node.reconcile import ReconcileReport, reconcile
from node.storage import Storage, sha256_hex
from tests.support import one_file_per_instance


@cache
def small_samples() -> list[bytes]:
    """Four small real sample files, each of a different study."""
    out: dict[str, bytes] = {}
    for path in sorted(one_file_per_instance(), key=lambda p: (p.stat().st_size, p.name)):
        data = path.read_bytes()
        out.setdefault(read_keys(data).study_instance_uid, data)
    return list(out.values())[:4]


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


async def store(storage: Storage, index: Index, data: bytes) -> tuple[InstanceKeys, str]:
    """What ingest does: the file first, then the index row."""
    sha = sha256_hex(data)
    storage.write(data, sha)
    outcome, _ = await index.add_instance(read_keys(data), sha, len(data), "TEST")
    assert outcome is AddOutcome.STORED
    return read_keys(data), sha


# --- storage -----------------------------------------------------------------------------


def test_write_is_content_addressed_and_leaves_no_temporary(storage: Storage) -> None:
    data = small_samples()[0]
    sha = sha256_hex(data)
    path = storage.write(data, sha)
    assert path == storage.root / "objects" / sha[:2] / f"{sha}.dcm"
    assert path.read_bytes() == data
    assert storage.exists(sha)
    assert storage.read(sha) == data
    assert list(storage.tmp.iterdir()) == []
    assert list(storage.iter_objects()) == [(sha, path)]
    # The same bytes again: harmless, still one file.
    assert storage.write(memoryview(data), sha) == path
    assert files_under(storage.objects) == [path]
    assert list(storage.tmp.iterdir()) == []


def test_write_elsewhere_and_remove(storage: Storage) -> None:
    data = small_samples()[1]
    sha = sha256_hex(data)
    path = storage.write(data, sha, into=storage.conflicts)
    assert path == storage.conflicts / f"{sha}.dcm"
    assert path.read_bytes() == data
    assert not storage.exists(sha)
    storage.write(data, sha)
    storage.remove(sha)
    assert not storage.exists(sha)
    storage.remove(sha)  # removing twice is fine
    assert list(storage.tmp.iterdir()) == []


def test_prepare_creates_layout_and_removes_leftovers(tmp_path: Path) -> None:
    store = Storage(tmp_path / "data")
    assert store.prepare() == 0
    for name in ("objects", "tmp", "conflicts", "quarantine"):
        assert (tmp_path / "data" / name).is_dir()
    # What a crash between write and rename leaves behind.
    (store.tmp / "0123.part").write_bytes(b"half an object")
    (store.tmp / "4567.part").write_bytes(b"")
    kept = store.write(small_samples()[0], sha256_hex(small_samples()[0]))
    assert store.prepare() == 2
    assert list(store.tmp.iterdir()) == []
    assert kept.is_file()  # objects are never touched
    assert store.prepare() == 0


# --- index schema ------------------------------------------------------------------------


async def test_new_index_has_current_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    idx = await Index.open(path)
    try:
        assert await idx.schema_version() == SCHEMA_VERSION
    finally:
        await idx.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"studies", "series", "instances", "changes", "conflicts", "state"} <= tables


async def test_reopening_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    data = small_samples()[0]
    idx = await Index.open(path)
    try:
        await idx.add_instance(read_keys(data), sha256_hex(data), len(data))
    finally:
        await idx.close()
    idx = await Index.open(path)
    try:
        assert await idx.schema_version() == SCHEMA_VERSION
        assert (await idx.counts()).instances == 1
    finally:
        await idx.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(IndexFailure) as exc:
        await Index.open(path)
    message = str(exc.value)
    assert f"version {SCHEMA_VERSION + 1}" in message
    assert "newer" in message
    assert "upgrade PACSmesh" in message
    # The file is left as it was: an older PACSmesh never downgrades it.
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


async def test_newer_schema_stops_the_archive_from_opening(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / INDEX_FILE) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(StartupError) as exc:
        await open_archive(data_dir)
    assert "newer than this PACSmesh" in str(exc.value)
    assert str(data_dir / INDEX_FILE) in str(exc.value)


async def test_add_instance_outcomes(index: Index) -> None:
    data = small_samples()[0]
    keys, sha, size = read_keys(data), sha256_hex(data), len(data)

    assert await index.add_instance(keys, sha, size, "A") == (AddOutcome.STORED, sha)
    assert await index.add_instance(keys, sha, size, "B") == (AddOutcome.DUPLICATE, sha)
    other = "f" * 64
    assert await index.add_instance(keys, other, size + 1, "C") == (AddOutcome.CONFLICT, sha)

    # The first copy stays on record; nothing was added twice.
    assert await index.lookup_sha(keys.sop_instance_uid) == sha
    counts = await index.counts()
    assert (counts.instances, counts.series, counts.studies, counts.bytes) == (1, 1, 1, size)
    assert await index.all_shas() == {sha: keys.sop_instance_uid}


async def test_add_instances_of_one_series(index: Index) -> None:
    data = small_samples()[0]
    keys = read_keys(data)
    for n in range(3):
        sop = f"{keys.sop_instance_uid}.{n}"
        outcome, _ = await index.add_instance(replace(keys, sop_instance_uid=sop), f"{n:064x}", 10)
        assert outcome is AddOutcome.STORED
    counts = await index.counts()
    assert (counts.patients, counts.studies, counts.series, counts.instances) == (1, 1, 1, 3)
    assert counts.bytes == 30


# --- reconciliation ----------------------------------------------------------------------


async def test_reconcile_clean_archive_does_nothing(storage: Storage, index: Index) -> None:
    for data in small_samples():
        await store(storage, index, data)
    assert await reconcile(storage, index) == ReconcileReport()
    assert (await index.counts()).instances == len(small_samples())


async def test_object_without_index_row_is_reindexed(storage: Storage, index: Index) -> None:
    # A crash after the file was fsynced and before the row was committed.
    stored, orphan = small_samples()[0], small_samples()[1]
    await store(storage, index, stored)
    orphan_sha = sha256_hex(orphan)
    path = storage.write(orphan, orphan_sha)
    (storage.tmp / "crash.part").write_bytes(orphan[:100])

    report = await reconcile(storage, index)

    assert report == ReconcileReport(temp_removed=1, reindexed=1)
    assert path.read_bytes() == orphan  # nothing lost
    keys = read_keys(orphan)
    assert await index.lookup_sha(keys.sop_instance_uid) == orphan_sha
    assert (await index.counts()).bytes == len(stored) + len(orphan)
    assert list(storage.tmp.iterdir()) == []
    assert await reconcile(storage, index) == ReconcileReport()  # settled


async def test_corrupt_object_is_quarantined(
    storage: Storage, index: Index, caplog: pytest.LogCaptureFixture
) -> None:
    data = small_samples()[0]
    sha = sha256_hex(data)
    path = storage.write(data, sha)
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte, as a bad disk would do
    path.write_bytes(bytes(damaged))

    with caplog.at_level(logging.ERROR, logger="node.reconcile"):
        report = await reconcile(storage, index)

    assert report == ReconcileReport(quarantined=1)
    assert not path.exists()
    moved = storage.quarantine / f"{sha}.dcm"
    assert moved.read_bytes() == bytes(damaged)  # kept, never deleted
    assert (await index.counts()).instances == 0
    assert any(sha in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_non_dicom_object_is_quarantined(storage: Storage, index: Index) -> None:
    junk = b"not DICOM at all" * 100
    sha = sha256_hex(junk)
    storage.write(junk, sha)
    assert await reconcile(storage, index) == ReconcileReport(quarantined=1)
    assert (storage.quarantine / f"{sha}.dcm").read_bytes() == junk
    assert list(storage.iter_objects()) == []


async def test_unindexed_conflicting_copy_goes_to_conflicts(
    storage: Storage, index: Index
) -> None:
    original = small_samples()[0]
    await store(storage, index, original)
    ds = dcmread(io.BytesIO(original))
    ds.PatientName = "Changed^Elsewhere"
    buf = io.BytesIO()
    ds.save_as(buf)
    changed = buf.getvalue()
    changed_sha = sha256_hex(changed)
    storage.write(changed, changed_sha)

    report = await reconcile(storage, index)

    assert report == ReconcileReport()
    assert (storage.conflicts / f"{changed_sha}.dcm").read_bytes() == changed
    assert not storage.exists(changed_sha)
    assert await index.lookup_sha(read_keys(original).sop_instance_uid) == sha256_hex(original)


async def test_index_row_without_file_is_dropped(
    storage: Storage, index: Index, caplog: pytest.LogCaptureFixture
) -> None:
    kept, lost = small_samples()[0], small_samples()[1]
    await store(storage, index, kept)
    lost_keys, lost_sha = await store(storage, index, lost)
    storage.path(lost_sha).unlink()  # removed outside PACSmesh

    with caplog.at_level(logging.ERROR, logger="node.reconcile"):
        report = await reconcile(storage, index)

    assert report == ReconcileReport(rows_without_file=1)
    assert await index.lookup_sha(lost_keys.sop_instance_uid) is None
    assert await index.lookup_sha(read_keys(kept).sop_instance_uid) == sha256_hex(kept)
    counts = await index.counts()
    assert (counts.instances, counts.bytes) == (1, len(kept))
    # The emptied series and study go too (the samples belong to different studies).
    assert lost_keys.study_instance_uid != read_keys(kept).study_instance_uid
    assert counts.studies == 1 and counts.series == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "no file" in errors[0].getMessage()


async def test_open_archive_reconciles(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    storage = Storage(data_dir)
    storage.prepare()
    data = small_samples()[2]
    storage.write(data, sha256_hex(data))
    archive, report = await open_archive(data_dir)
    try:
        assert report.reindexed == 1
        assert (await archive.index.counts()).instances == 1
    finally:
        await archive.index.close()


def test_newer_schema_cli_error_and_exit(tmp_path: Path) -> None:
    """``pacsmesh import`` on a newer index says why in one line and exits (no hang)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / INDEX_FILE) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    # Owner-only, as a node leaves it: else the start's fix of the modes is a line too.
    for path in (data_dir, data_dir / INDEX_FILE):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    sample = tmp_path / "sample.dcm"
    sample.write_bytes(small_samples()[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSMESH_")}
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "import", "--data-dir", str(data_dir), str(sample)],
        capture_output=True, text=True, timeout=30, env={**env, "COLUMNS": "80"},
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pacsmesh: error: cannot open index")
    assert "newer than this PACSmesh" in lines[0]
