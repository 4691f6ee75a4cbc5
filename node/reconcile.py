"""Start-up reconciliation of object files and the index, in proportion to what a crash
can leave, not to the archive.

Files are the truth. What a crash can leave, by step of :meth:`Archive.ingest` and of
the removals, and how start-up finds each without listing the archive:

- temporaries in ``tmp/`` (written, never renamed): deleted; ``tmp/`` holds only the
  ingests in flight, so listing it is cheap.
- an object renamed into place whose index row never committed, or committed with
  ``synchronous=NORMAL`` (node/db.py) and lost in a power loss after the sender heard
  success. Each ingest first writes an intent, ``pending/<sha>.placed`` (node/storage.py,
  :meth:`Storage.intend`), and fsyncs ``pending/`` while its temporary file's own
  fdatasync runs: the intent is durable before the rename can be, at no extra wait. An
  intent is retired (:func:`retire_intents`, about once a second, and at a clean stop)
  only after its outcome is durable: the row was seen committed *before* a commit with
  ``synchronous=FULL`` synced the log (:meth:`Index.sync_durably`), or the ingest ended
  without an object in place. So at start-up the intents name every object that may lack
  its row: about a second of ingests, whatever the archive holds. Each is checked:
  indexed now (its bytes were fsynced, nothing is lost), set aside as damaged, moved to
  ``conflicts/``, or removed as tombstoned; an intent whose object never arrived while
  its row did (a power loss undid the rename) drops the row.
- a removal whose rows were dropped but whose files remain (a deletion's purge, a cache
  eviction), or a quarantine whose file moved but whose rows remain: each writes a
  ``pending/*.removed`` or ``*.quarantined`` record first (removals are rare: their fsync
  is theirs) and deletes it once done; files are removed only once the rows' removal is
  durable. Start-up finishes each: a file no row references goes (or to quarantine); a
  row whose file is gone is dropped.

Damage done outside PACSmesh (files deleted, copied in or altered by hand) leaves no
record: ``pacsmesh fsck`` runs :func:`reconcile`, the full comparison of every file with
every row, and so does the first start of a data dir whose index has no journal yet
(made by a version without one). Bit rot is the scrubber's (node/scrub.py).
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
# Set in the index once the full reconciliation ran: from then on the journal is enough.
JOURNAL_STATE = ("storage", "journal")
RETIRE_INTERVAL = 1.0


@dataclass(frozen=True)
class ReconcileReport:
    temp_removed: int = 0
    reindexed: int = 0
    quarantined: int = 0
    rows_without_file: int = 0
    tombstoned_removed: int = 0


async def recover(storage: Storage, index: Index) -> ReconcileReport:
    """What start-up runs: the journal's records only, or the full scan once for a data
    dir whose index predates the journal."""
    if not (await index.load_state(JOURNAL_STATE[0])).get(JOURNAL_STATE[1]):
        report = await reconcile(storage, index)
        await index.save_state(*JOURNAL_STATE, 1)
        await index.sync_durably()
        return report
    temp_removed = await asyncio.to_thread(storage.prepare)
    counts = _Counts()
    placed = await asyncio.to_thread(storage.placed_intents)
    if placed:
        indexed = await index.indexed_shas(placed)
        for sha in placed:
            path = storage.path(sha)
            on_disk = await asyncio.to_thread(path.is_file)
            if on_disk and sha not in indexed:
                await _reindex(storage, index, sha, path, counts)
            elif not on_disk and sha in indexed:
                counts.rows_without_file += await _drop_rows(index, sha)
    records = await asyncio.to_thread(storage.removal_records)
    for _, kind, objects, copies in records:
        await _finish_removal(storage, index, kind, objects, copies, counts)
    # Only once what was done above is durable may its records go.
    if placed or records:
        await index.sync_durably()
    await asyncio.to_thread(storage.retire, placed)
    for record, *_ in records:
        storage.removal_done(record)
    report = ReconcileReport(temp_removed, counts.reindexed, counts.quarantined,
                             counts.rows_without_file, counts.tombstoned)
    if report != ReconcileReport():
        log.info("recovered after a crash: %s (%d intent(s), %d removal record(s))",
                 report, len(placed), len(records))
    return report


async def retire_intents(storage: Storage, index: Index) -> int:
    """Retire the intents whose outcome is durable; return how many went."""
    placed = await asyncio.to_thread(storage.placed_intents)
    if not placed:
        return 0
    # Rows seen now are made durable by the sync below; an ingest that ends between the
    # two keeps its intent until the next round.
    done = await index.indexed_shas(placed)
    done |= await asyncio.to_thread(
        lambda: {sha for sha in placed if sha not in done and not storage.exists(sha)})
    await index.sync_durably()
    await asyncio.to_thread(storage.retire, done)  # file system work: off the loop
    return len(done)


async def retire_forever(storage: Storage, index: Index,
                         interval: float = RETIRE_INTERVAL) -> None:
    """Keep ``pending/`` to about ``interval`` of ingests (the node runs this)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await retire_intents(storage, index)
        except Exception as exc:  # disk or index: reported and tried again; intents
            # only accumulate meanwhile, and the next start-up checks them
            log.warning("could not retire crash-journal intents: %s", exc)


@dataclass
class _Counts:
    reindexed: int = 0
    quarantined: int = 0
    rows_without_file: int = 0
    tombstoned: int = 0


async def _reindex(storage: Storage, index: Index, sha: str, path: Path,
                   counts: _Counts) -> None:
    """Index a complete object no row references (or set it aside)."""
    verified = await asyncio.to_thread(_verified_keys, storage, path, sha)
    if verified is None:
        await asyncio.to_thread(storage.move_to_quarantine, path)
        counts.quarantined += 1
        return
    keys, size = verified
    outcome, _ = await index.add_instance(keys, sha, size, "reconcile")
    if outcome is AddOutcome.CONFLICT:
        await asyncio.to_thread(os.replace, path, storage.conflicts / path.name)
    elif outcome is AddOutcome.TOMBSTONED:
        # Left by a crash between a deletion's commit and its file removal.
        await asyncio.to_thread(storage.remove, sha)
        counts.tombstoned += 1
    else:
        counts.reindexed += 1


async def _drop_rows(index: Index, sha: str) -> int:
    sops = await index.sops_with_sha(sha)
    if sops:
        log.error("%d indexed instance(s) lost their file %s...; dropping their rows",
                  len(sops), sha[:12])
        await index.remove_instances(sops)
    return len(sops)


async def _finish_removal(storage: Storage, index: Index, kind: str, objects: list[str],
                          copies: list[str], counts: _Counts) -> None:
    indexed = await index.indexed_shas(objects)
    for sha in objects:
        path = storage.path(sha)
        on_disk = await asyncio.to_thread(path.is_file)
        if on_disk and sha not in indexed:
            # The rows went (the removal committed); the file is to follow them.
            if kind == "quarantined":
                await asyncio.to_thread(storage.move_to_quarantine, path)
                counts.quarantined += 1
            else:
                await asyncio.to_thread(storage.purge, (sha,), ())
                counts.tombstoned += 1
        elif not on_disk and sha in indexed:
            counts.rows_without_file += await _drop_rows(index, sha)
    kept = await index.kept_conflict_copies(copies)
    await asyncio.to_thread(storage.purge, (), tuple(c for c in copies if c not in kept))


async def reconcile(storage: Storage, index: Index) -> ReconcileReport:
    """The full scan: every object file against every index row (``pacsmesh fsck``)."""
    temp_removed = await asyncio.to_thread(storage.prepare)
    counts = _Counts()
    # Removals first: their files are to go, not to be indexed again.
    records = await asyncio.to_thread(storage.removal_records)
    for _, kind, objects, copies in records:
        await _finish_removal(storage, index, kind, objects, copies, counts)
    placed = await asyncio.to_thread(storage.placed_intents)
    on_disk = await asyncio.to_thread(lambda: dict(storage.iter_objects()))
    indexed = await index.all_shas()

    for sha, path in on_disk.items():
        if sha not in indexed:
            await _reindex(storage, index, sha, path, counts)

    missing = [sop for sha, sop in indexed.items() if sha not in on_disk]
    if missing:
        log.error(
            "%d indexed instance(s) have no file in %s (removed outside PACSmesh); "
            "dropping their index rows", len(missing), storage.objects,
        )
        await index.remove_instances(missing)
    await index.sync_durably()
    storage.retire(placed)
    for record, *_ in records:
        storage.removal_done(record)
    report = ReconcileReport(temp_removed, counts.reindexed, counts.quarantined,
                             counts.rows_without_file + len(missing), counts.tombstoned)
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
