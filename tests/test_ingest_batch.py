"""Concurrent ingests share index writes (node/ingest_batch.py): every outcome is still
each instance's own, and a SIGKILL mid-batch loses nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from node.app import close_archive, open_archive
from node.archive import IngestStatus
from node.dicom_header import read_keys
from node.index import AddOutcome, Index
from tests.small_instances import instance, sop_uid, template

ACK_BOUND = 60.0  # seconds the crashing child may take to acknowledge its first stores


async def _ingest_all(data_dir: Path, payloads: list[bytes]) -> list[IngestStatus]:
    """Ingest every payload, from threads all at once; outcomes in payload order."""
    await asyncio.to_thread(data_dir.mkdir, exist_ok=True)
    archive, _ = await open_archive(data_dir)
    try:
        results = await asyncio.gather(*(asyncio.to_thread(archive.ingest, p, "BATCH")
                                         for p in payloads))
        return [r.status for r in results]
    finally:
        await close_archive(archive)


async def test_concurrent_ingests_of_different_instances_are_each_stored(
        tmp_path: Path) -> None:
    base = template()
    payloads = [instance(base, n) for n in range(60)]
    assert await _ingest_all(tmp_path, payloads) == [IngestStatus.STORED] * 60
    index = await Index.open(tmp_path / "index.sqlite")
    try:
        for n, data in enumerate(payloads):
            assert await index.lookup_sha(sop_uid(n)) == hashlib.sha256(data).hexdigest()
    finally:
        await index.close()
    # And again: every one a duplicate, nothing rewritten or lost.
    assert await _ingest_all(tmp_path, payloads) == [IngestStatus.DUPLICATE] * 60


async def test_concurrent_ingests_of_the_same_instance_store_it_once(tmp_path: Path) -> None:
    base = template()
    same = [instance(base, 1)] * 12
    outcomes = Counter(await _ingest_all(tmp_path / "same", same))
    assert outcomes == {IngestStatus.STORED: 1, IngestStatus.DUPLICATE: 11}
    # Same SOP Instance UID, different bytes (a name of the same length): the first
    # recorded stays, the rest conflict.
    variants = [instance(base, 2).replace(b"BENCH^STARTUP", f"BENCH^VARIAN{n}".encode())
                for n in range(6)]
    outcomes = Counter(await _ingest_all(tmp_path / "variants", variants))
    assert outcomes == {IngestStatus.STORED: 1, IngestStatus.CONFLICT: 5}


async def test_a_batch_with_duplicates_and_new_rows_answers_each_row(index: Index) -> None:
    base = template()
    rows = []
    for n in (1, 2, 1, 3):
        data = instance(base, n)
        rows.append((read_keys(data), hashlib.sha256(data).hexdigest(), len(data), "X"))
    other = instance(base, 3).replace(b"BENCH^STARTUP", b"BENCH^OTHER01")
    rows.append((read_keys(other), hashlib.sha256(other).hexdigest(), len(other), "X"))
    outcomes = await index.add_instances(rows)
    assert [o if isinstance(o, Exception) else o[0] for o in outcomes] == [
        AddOutcome.STORED, AddOutcome.STORED, AddOutcome.DUPLICATE, AddOutcome.STORED,
        AddOutcome.CONFLICT]
    assert await index.lookup_sha(sop_uid(3)) == rows[3][1]


# The child: SENDERS threads ingest numbered instances without end, and print each
# number once its ingest has returned STORED (what a sender would have been told).
_CHILD = """
import asyncio, sys, threading
from pathlib import Path
from node.app import open_archive
from tests.small_instances import instance, template

async def main() -> None:
    archive, _ = await open_archive(Path(sys.argv[1]))
    base, lock, counter = template(), threading.Lock(), iter(range(10**9))
    def sender() -> None:
        while True:
            with lock:
                n = next(counter)
            archive.ingest(instance(base, n), "CRASH")
            with lock:
                sys.stdout.write(f"{n}\\n")
                sys.stdout.flush()
    await asyncio.gather(*(asyncio.to_thread(sender) for _ in range(8)))
asyncio.run(main())
"""


def _acknowledged_then_killed(data_dir: Path, at_least: int) -> list[int]:
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(data_dir)],
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert child.stdout is not None
    acked: list[int] = []
    deadline = time.monotonic() + ACK_BOUND
    try:
        while len(acked) < at_least:
            line = child.stdout.readline()
            assert line, f"the child ended early ({child.poll()})"
            acked.append(int(line))
            assert time.monotonic() < deadline, "the child acknowledged too slowly"
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate()
    # What it printed before the kill was acknowledged too.
    return acked + [int(n) for n in rest.split() if n.strip().isdigit()]


async def test_sigkill_mid_batch_loses_nothing_acknowledged(tmp_path: Path) -> None:
    base = template()
    for round_ in range(3):  # killed at a different point of a batch each time
        acked = _acknowledged_then_killed(tmp_path, 40 + 37 * round_)
        archive, _ = await open_archive(tmp_path)  # recovery: what the journal names
        try:
            for n in acked:
                sha = await archive.index.lookup_sha(sop_uid(n))
                assert sha == hashlib.sha256(instance(base, n)).hexdigest(), n
                assert archive.storage.read(sha) == instance(base, n)
        finally:
            await close_archive(archive)
