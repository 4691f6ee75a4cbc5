"""Start-up reconciliation of object files and the index.

Files are the truth. A crash can leave: temporaries (deleted), a complete object whose
index row was never committed (indexed now: its bytes were fsynced, so nothing is lost),
or a file damaged outside PACSmesh (moved to ``quarantine/``, never deleted).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from node.dicom_header import InstanceKeys, InvalidDataset, read_keys
from node.index import AddOutcome, Index
from node.storage import Storage, TamperedObject, sha256_hex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileReport:
    temp_removed: int = 0
    reindexed: int = 0
    quarantined: int = 0
    rows_without_file: int = 0
    tombstoned_removed: int = 0


async def reconcile(storage: Storage, index: Index) -> ReconcileReport:
    temp_removed = await asyncio.to_thread(storage.prepare)
    on_disk = await asyncio.to_thread(lambda: dict(storage.iter_objects()))
    indexed = await index.all_shas()

    reindexed = quarantined = tombstoned = 0
    for sha, path in on_disk.items():
        if sha in indexed:
            continue
        verified = await asyncio.to_thread(_verified_keys, storage, path, sha)
        if verified is None:
            await asyncio.to_thread(storage.move_to_quarantine, path)
            quarantined += 1
            continue
        keys, size = verified
        outcome, _ = await index.add_instance(keys, sha, size, "reconcile")
        if outcome is AddOutcome.CONFLICT:
            await asyncio.to_thread(os.replace, path, storage.conflicts / path.name)
        elif outcome is AddOutcome.TOMBSTONED:
            # Left by a crash between a deletion's commit and its file removal.
            await asyncio.to_thread(storage.remove, sha)
            tombstoned += 1
        else:
            reindexed += 1

    missing = [sop for sha, sop in indexed.items() if sha not in on_disk]
    if missing:
        log.error(
            "%d indexed instance(s) have no file in %s (removed outside PACSmesh); "
            "dropping their index rows", len(missing), storage.objects,
        )
        await index.remove_instances(missing)
    report = ReconcileReport(temp_removed, reindexed, quarantined, len(missing), tombstoned)
    if report != ReconcileReport():
        log.info("reconciled data dir: %s", report)
    return report


def _verified_keys(storage: Storage, path: Path, sha: str) -> tuple[InstanceKeys, int] | None:
    """The keys and plaintext size of a sound object; None for a damaged one."""
    try:
        with storage.open_file(path, sha) as fh:
            data = fh.read()
    except TamperedObject as exc:
        log.error("%s; quarantined", exc)
        return None
    if sha256_hex(data) != sha:
        log.error("object %s does not match its hash; quarantined", path.name)
        return None
    try:
        return read_keys(data), len(data)
    except InvalidDataset as exc:
        log.error("object %s is not a storable instance (%s); quarantined", path.name, exc)
        return None
