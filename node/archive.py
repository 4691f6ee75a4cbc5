"""Ingest: one received object becomes a durable file plus an index row, or a typed error.

:meth:`Archive.ingest` blocks (hashing, writing, fsync) and must run on a worker thread
(a pynetdicom handler thread, or ``asyncio.to_thread``); it hands index work to the loop
that owns the index and waits for the commit before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import io
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from node.dicom_header import InstanceKeys, InvalidDataset, read_keys
from node.dicom_validate import validate
from node.index import AddOutcome, Index
from node.ingest_batch import AddBatcher
from node.storage import Storage, StorageError, sha256_hex

log = logging.getLogger(__name__)
# Quarantine lines keep the logger they had when the scrub module wrote them: operators'
# log filters keep matching.
quarantine_log = logging.getLogger("node.scrub")
T = TypeVar("T")
# Writers shared by all associations: enough for the associations a node usually has busy.
_WRITERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pacsmesh-write")


class IngestStatus(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    TOMBSTONED = "tombstoned"  # its study was deleted mesh-wide: refused, nothing kept


@dataclass(frozen=True)
class IngestResult:
    status: IngestStatus
    sha256: str
    keys: InstanceKeys  # what the audit trail records (patient, study)

    @property
    def sop_instance_uid(self) -> str:
        return self.keys.sop_instance_uid


class Archive:
    def __init__(self, storage: Storage, index: Index) -> None:
        """Create on the event loop that owns ``index``."""
        self.storage = storage
        self.index = index
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._adds = AddBatcher(index)  # concurrent ingests share one index write
        # Told the SHA-256 of each object set aside as damaged (the audit trail listens).
        self.on_damaged: Callable[[str], None] | None = None
        # Told (source, reason) of each received object refused as incomplete or with
        # invalid UIDs (the audit trail listens).
        self.on_refused: Callable[[str, str], None] | None = None

    def _check(self, source: bytes | BinaryIO, source_aet: str) -> InstanceKeys:
        """The keys of a whole, well-formed object; else InvalidDataset, reported."""
        try:
            validate(source)
            if not isinstance(source, bytes):
                source.seek(0)
            return read_keys(source)
        except InvalidDataset as exc:
            if self.on_refused is not None:
                self.on_refused(source_aet, str(exc))
            raise

    def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the index's loop and wait for it (from another thread)."""
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError("Archive.on_loop called on the event loop thread; use await")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def path(self, sha256: str) -> Path:
        return self.storage.path(sha256)

    async def set_aside(self, sha256: str, why: str) -> None:
        """A read (or scrub) found object ``sha256`` damaged: quarantine it and forget it
        here, so that the mesh's anti-entropy sends a good copy back, and tell the audit
        trail."""
        await self._quarantine(sha256, why)
        if self.on_damaged is not None:
            self.on_damaged(sha256)

    async def _quarantine(self, name: str, why: str) -> None:
        """Move the object to quarantine and drop its index rows, so the instance counts
        as missing here and anti-entropy fetches it again from a replica."""
        holders = await self.index.sops_with_sha(name)
        # Between the move and the rows' removal, a crash would leave rows without a
        # file: the record lets start-up finish the job.
        record = await asyncio.to_thread(self.storage.intend_removal, "quarantined", [name])
        try:
            await asyncio.to_thread(self.storage.move_to_quarantine, self.storage.path(name))
        except FileNotFoundError:
            self.storage.removal_done(record)
            return  # replaced or removed meanwhile
        if holders:
            await self.index.remove_instances(holders)
        await self.index.sync_durably()
        self.storage.removal_done(record)
        quarantine_log.error(
            "object %s set aside (%s): moved to quarantine; %d instance(s) will be fetched"
            " again from the mesh", name[:12], why, len(holders),
        )

    def ingest(self, data: bytes, source_aet: str = "") -> IngestResult:
        """Store one Part 10 object, if whole and well-formed (node/dicom_validate.py).
        Raises InvalidDataset, StorageError or IndexFailure."""
        # The write and its fdatasync (the slowest step) run on another thread while this
        # one hashes and parses the header; then the index insert overlaps the directory
        # fsync that makes the rename durable. Everything finishes before anything is
        # answered. Hashing first matters: it releases the GIL, so the writer starts at
        # once instead of waiting for the parse (pure Python) to end.
        # The crash journal's intent (node/reconcile.py) is made durable meanwhile too.
        writing = _WRITERS.submit(self.storage.write_temp, data)
        intending: Future[None] | None = None
        try:
            sha = sha256_hex(data)
            intending = _WRITERS.submit(self.storage.intend, sha)
            keys = self._check(data, source_aet)
            intending.result()
        except BaseException as exc:
            with contextlib.suppress(StorageError):
                self.storage.discard(writing.result())
            if intending is not None and intending.exception() is None:
                self.storage.settled(sha)
            if isinstance(exc, StorageError) and intending is not None \
                    and intending.exception() is exc:
                return self._held_already(keys, sha, exc)
            raise

        def keep_aside() -> None:
            self.storage.write(data, sha, into=self.storage.conflicts)

        try:
            return self._settle(writing.result(), keys, sha, len(data), source_aet,
                                keep_aside)
        finally:
            self.storage.settled(sha)

    def ingest_file(self, tmp: Path, sha: str, source_aet: str = "") -> IngestResult:
        """Store a durable (fdatasynced) file on the data dir's file system whose SHA-256
        the caller has checked; it is moved into place, never read whole into memory.
        Its structure is walked (values skipped) and its header parsed. Raises like
        :meth:`ingest`; ``tmp`` is gone after."""
        try:
            with self.storage.open_file(tmp, sha) as fh:
                keys = self._check(fh, source_aet)
                size = fh.seek(0, io.SEEK_END)  # the plaintext's, for a sealed file too
        except BaseException:
            self.storage.discard(tmp)
            raise

        def keep_aside() -> None:
            # By now the file sits under its hash in objects/, referenced by no row.
            self.storage.commit(self.path(sha), sha, into=self.storage.conflicts)

        try:
            self.storage.intend(sha)
        except StorageError as exc:
            self.storage.discard(tmp)
            return self._held_already(keys, sha, exc)
        try:
            return self._settle(tmp, keys, sha, size, source_aet, keep_aside)
        finally:
            self.storage.settled(sha)

    def _held_already(self, keys: InstanceKeys, sha: str, exc: StorageError) -> IngestResult:
        """No intent could be written (a full disk): nothing may be placed, but a resend
        of what is held needs no space and is answered; else ``exc`` is raised."""
        if self.on_loop(self.index.lookup_sha(keys.sop_instance_uid)) == sha:
            return IngestResult(IngestStatus.DUPLICATE, sha, keys)
        raise exc

    def _settle(
        self, tmp: Path, keys: InstanceKeys, sha: str, size: int, source_aet: str,
        keep_aside: Callable[[], None],
    ) -> IngestResult:
        """Move a durable temporary file into place and index it: stored, duplicate or
        conflict. ``keep_aside`` puts a conflicting copy under conflicts/."""
        try:
            placed = self.storage.place(tmp, sha)
        except StorageError:
            # A resend of what we hold needs no space: answer it even on a full disk.
            existing = self.on_loop(self.index.lookup_sha(keys.sop_instance_uid))
            if existing is None:
                raise
            if existing == sha:
                return IngestResult(IngestStatus.DUPLICATE, sha, keys)
            return self._conflict(keys, sha, size, existing, source_aet, keep_aside)
        syncing = _WRITERS.submit(self.storage.sync_place, placed)
        try:
            outcome, existing = self.on_loop(self._adds.add(keys, sha, size, source_aet))
        except BaseException:
            with contextlib.suppress(StorageError):
                syncing.result()
            self._discard_unless_recorded(keys, sha)
            raise
        # A failed directory sync leaves the file and its row in place, not yet durable:
        # the sender hears of a failure, and its resend is answered as a duplicate.
        syncing.result()
        if outcome is AddOutcome.STORED:
            return IngestResult(IngestStatus.STORED, sha, keys)
        if outcome is AddOutcome.DUPLICATE:
            return IngestResult(IngestStatus.DUPLICATE, sha, keys)
        if outcome is AddOutcome.TOMBSTONED:
            self.storage.remove(sha)
            return IngestResult(IngestStatus.TOMBSTONED, sha, keys)
        # Different bytes were recorded first; ours are not referenced by any row.
        result = self._conflict(keys, sha, size, existing, source_aet, keep_aside)
        self.storage.remove(sha)
        return result

    def _discard_unless_recorded(self, keys: InstanceKeys, sha: str) -> None:
        try:
            recorded = self.on_loop(self.index.lookup_sha(keys.sop_instance_uid))
        except Exception:
            return  # keep the file: start-up reconciliation indexes or removes it
        if recorded != sha:
            self.storage.remove(sha)

    def _conflict(
        self, keys: InstanceKeys, sha: str, size: int, stored_sha: str, source_aet: str,
        keep_aside: Callable[[], None],
    ) -> IngestResult:
        kept = True
        try:
            keep_aside()
        except StorageError as exc:
            kept = False
            log.warning("could not keep the conflicting copy %s: %s", sha[:12], exc)
        self.on_loop(
            self.index.record_conflict(
                keys.sop_instance_uid, stored_sha, sha, size, kept, source_aet
            )
        )
        log.warning(
            "instance received again with different bytes (stored %s, received %s): "
            "first copy kept", stored_sha[:12], sha[:12],
        )
        return IngestResult(IngestStatus.CONFLICT, sha, keys)
