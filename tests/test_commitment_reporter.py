"""The commitment reporter on a real archive: a stored file is hashed again before it
counts, and a damaged one is set aside and reported failed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from node.archive import Archive
from node.commitment import REPORTED, CommitmentStore, Item, LoneNode, Request
from node.dicom.stgcmt_report import ALL_COMMITTED, SOME_FAILED, CommitmentReporter
from node.index import Index
from node.storage import Storage

CT = "1.2.840.10008.5.1.4.1.1.2"


async def _reporter(storage: Storage, index: Index) -> tuple[CommitmentReporter, list]:
    sent: list[tuple[int, Dataset]] = []

    def send(own: str, requester: str, address: tuple[str, int], ds: Dataset,
             event_type: int) -> None:
        sent.append((event_type, ds))

    archive = Archive(storage, index)
    reporter = CommitmentReporter(archive, CommitmentStore(index.db), LoneNode(),
                                  lambda aet: ("127.0.0.1", 1), "NODE", send)
    return reporter, sent


def _ingest(archive: Archive) -> tuple[str, str]:
    path = Path(get_testdata_file("CT_small.dcm"))
    result = archive.ingest(path.read_bytes(), "TEST")
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID), result.sha256


async def _stored(reporter: CommitmentReporter) -> tuple[str, str]:
    return await asyncio.to_thread(_ingest, reporter.archive)


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.chmod(0o600)
    path.write_bytes(bytes(data))


async def test_an_intact_copy_is_committed(storage: Storage, index: Index) -> None:
    reporter, sent = await _reporter(storage, index)
    sop, _ = await _stored(reporter)
    request = Request("1.2.3.4", "MOD", (Item(CT, sop),), time.time() + 600)
    await reporter.store.add(request)
    await reporter.round()
    assert [(t, [r.ReferencedSOPInstanceUID for r in ds.ReferencedSOPSequence])
            for t, ds in sent] == [(ALL_COMMITTED, [sop])]
    stored = await reporter.store.get("MOD", "1.2.3.4")
    assert stored is not None and stored.state == REPORTED


async def test_a_damaged_copy_is_set_aside_and_never_committed(
    storage: Storage, index: Index
) -> None:
    reporter, sent = await _reporter(storage, index)
    sop, sha = await _stored(reporter)
    path = storage.path(sha)
    _damage(path)
    await reporter.store.add(Request("1.2.3.5", "MOD", (Item(CT, sop),), time.time() + 600))
    await reporter.round()
    assert sent == []  # not committed, and the deadline is far: it waits
    assert not path.exists() and await index.lookup_sha(sop) is None  # quarantined
    # The deadline passes: held nowhere any more, so "no such object".
    reporter.clock = lambda: time.time() + 3600
    await reporter.round()
    assert [(t, [(r.ReferencedSOPInstanceUID, r.FailureReason) for r in ds.FailedSOPSequence])
            for t, ds in sent] == [(SOME_FAILED, [(sop, 0x0112)])]
