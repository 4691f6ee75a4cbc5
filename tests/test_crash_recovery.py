"""Start-up after a crash checks what the crash journal names, and finds everything a
crash can leave (node/reconcile.py), in a 10,000-instance archive.

The node runs as a real process and is SIGKILLed; the states a kill can leave mid-way
(a half-written temporary, an object renamed into place whose row never committed, a
deletion committed whose files remained) are then laid down by the same calls, in the
same order, as ``Archive.ingest`` and ``Deletions._apply`` make them, stopping where the
kill would have."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from node.app import close_archive, open_archive
from node.datadir import INDEX_FILE
from node.index import Index
from node.reconcile import recover, retire_intents
from node.storage import Storage, sha256_hex
from replication.tombstone_store import Tombstoned, TombstoneStore
from tests.small_instances import fill, instance, sop_uid, study_uid, template
from tests.support import NodeProcess

COUNT = 10_000
DOOMED = 7  # the study deleted mesh-wide (instances 700-799)


def c_find(node: NodeProcess, level: str, **keys: str) -> list[Dataset]:
    ae = AE(ae_title="FAULTS")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = level
    query.StudyInstanceUID = ""
    query.SOPInstanceUID = ""
    query.NumberOfStudyRelatedInstances = ""
    for k, v in keys.items():
        setattr(query, k, v)
    found: list[Dataset] = []
    try:
        for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind):
            assert "Status" in status
            if status.Status in (0xFF00, 0xFF01):
                assert identifier is not None
                found.append(identifier)
            else:
                assert status.Status == 0
    finally:
        assoc.release()
    return found


async def lay_down_crash(data_dir: Path) -> tuple[str, str, str]:
    """What a SIGKILL mid-way leaves; returns (temporary, orphan sha, deleted sha)."""
    storage = Storage(data_dir)
    index = await Index.open(data_dir / INDEX_FILE)
    try:
        # 1. An ingest killed while writing its temporary file.
        half = storage.tmp / "0123456789abcdef.part"
        half.write_bytes(instance(template(), COUNT)[:150])
        # 2. An ingest killed after the rename, before its row committed: the intent,
        # the fdatasynced temporary, the rename and its directory fsync.
        orphan = instance(template(), COUNT + 1)
        sha = sha256_hex(orphan)
        storage.intend(sha)
        storage.commit(storage.write_temp(orphan), sha)
        # 3. A deletion killed after its commit, before its files were removed.
        stones = TombstoneStore(index.db)
        objects, copies = await stones.study_files(study_uid(DOOMED * 100))
        storage.intend_removal("removed", objects, copies)
        await stones.delete_study(
            Tombstoned(study_uid(DOOMED * 100), "sig", "admin", 1.0, "test", {}), "admin", 2.0)
        assert all(storage.exists(s) for s in objects)
        return str(half), sha, objects[0]
    finally:
        await index.close()


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("filled") / "data"
    data_dir.mkdir()
    asyncio.run(fill(data_dir, COUNT))
    return data_dir


def test_restart_after_sigkill_finds_what_the_crash_left(filled: Path, make_node) -> None:
    node = make_node("crashed")
    subprocess.run(["cp", "-a", str(filled), str(node.data_dir)], check=True)
    node.start()
    assert node.status()["instances"] == COUNT
    node.kill()  # no clean stop: nothing is retired on the way out
    half, orphan_sha, deleted_sha = asyncio.run(lay_down_crash(node.data_dir))
    storage = Storage(node.data_dir)

    node.start()

    assert not Path(half).exists()  # the half-written temporary is gone
    assert sorted(os.listdir(storage.pending)) == []  # every record finished
    assert storage.exists(orphan_sha)  # nothing stored is lost...
    assert not storage.exists(deleted_sha)  # ...and nothing deleted stays
    # Start-up read the journal, not the archive.
    assert "reconciled data dir" not in node.log()
    assert "recovered after a crash" in node.log()
    # C-FIND answers: the orphan is indexed, the deleted study is gone, the rest is whole.
    [orphan] = c_find(node, "IMAGE", StudyInstanceUID=study_uid(COUNT + 1))
    assert orphan.SOPInstanceUID == sop_uid(COUNT + 1)
    assert c_find(node, "STUDY", StudyInstanceUID=study_uid(DOOMED * 100)) == []
    studies = c_find(node, "STUDY")
    assert len(studies) == COUNT // 100  # 100 studies - 1 deleted + the orphan's own
    assert sum(int(s.NumberOfStudyRelatedInstances) for s in studies) == COUNT - 100 + 1
    assert node.status()["instances"] == COUNT - 100 + 1
    assert node.stop() == 0


async def test_intents_are_retired_once_durable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    await fill(data_dir, 20)  # closes the archive: a clean stop retires everything
    assert os.listdir(data_dir / "pending") == []
    archive, _ = await open_archive(data_dir)
    try:
        await asyncio.to_thread(archive.ingest, instance(template(), 20), "TEST")
        assert len(os.listdir(data_dir / "pending")) == 1  # not yet known durable
        assert await retire_intents(archive.storage, archive.index) == 1
        assert os.listdir(data_dir / "pending") == []
    finally:
        await close_archive(archive)


async def test_an_intent_of_a_refused_object_needs_no_recovery(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    storage.prepare()
    index = await Index.open(storage.root / INDEX_FILE)
    try:
        await recover(storage, index)  # a new data dir: the full scan, once
        storage.intend("ab" * 32)  # killed before anything was renamed into place
        report = await recover(Storage(storage.root), index)  # the next process
        assert report.reindexed == 0 and os.listdir(storage.pending) == []
    finally:
        await index.close()


def test_fsck_finds_damage_done_outside(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    asyncio.run(fill(data_dir, 3))
    copied_in = instance(template(), 3)
    Storage(data_dir).write(copied_in, sha256_hex(copied_in))  # by hand: no intent
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "fsck", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1 reindexed" in result.stdout
