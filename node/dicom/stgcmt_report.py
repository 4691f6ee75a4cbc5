"""Storage Commitment Push Model SCP, the report side: judge, then N-EVENT-REPORT.

A task on the index's loop reads the waiting requests (``commitments``, which survive
restarts), sorts their instances (node.commitment.sort_items) and, once a verdict is
fixed, sends it on a new association to the requester. An unreachable requester is
tried again with growing pauses, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pydicom.dataset import Dataset
from pynetdicom import AE

from node.archive import Archive
from node.commitment import (
    REPORTING,
    CommitmentStore,
    DurableCopies,
    Held,
    Request,
    Verdict,
    sort_items,
)
from node.dicom.stgcmt_scp import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH,
    Resolver,
)
from node.errors import RemoteFailure
from node.storage import StorageError
from node.tasks import Repeating

log = logging.getLogger(__name__)

ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type ID, PS3.4 J.3.3.1
ROUND = 1.0  # seconds between checks of the waiting requests
MAX_ATTEMPTS = 8
_HASH_BLOCK = 1 << 20


class ReportFailed(RemoteFailure):
    """The requester could not be reached, or refused the report."""


def retry_pause(attempts: int) -> float | None:
    """Seconds before the next try after ``attempts`` failed ones; None: give up."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return float(min(300, 5 * 2 ** (attempts - 1)))


def report_dataset(request: Request, verdict: Verdict, retrieve_aet: str) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = request.transaction_uid
    if verdict.committed:
        ds.RetrieveAETitle = retrieve_aet
        ds.ReferencedSOPSequence = [_ref(i.sop_class_uid, i.sop_uid) for i in verdict.committed]
    if verdict.failed:
        failed = []
        for item, reason in verdict.failed:
            ref = _ref(item.sop_class_uid, item.sop_uid)
            ref.FailureReason = reason
            failed.append(ref)
        ds.FailedSOPSequence = failed
    return ds


def _ref(sop_class: str, sop_uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class
    ref.ReferencedSOPInstanceUID = sop_uid
    return ref


def send_report(own_aet: str, requester: str, address: tuple[str, int], ds: Dataset,
                event_type: int) -> None:
    """One association to the requester, one N-EVENT-REPORT (blocks: run on a thread)."""
    ae = AE(ae_title=own_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH)
    assoc = ae.associate(address[0], address[1], ae_title=requester)
    if not assoc.is_established:
        raise ReportFailed(f"association to {requester} at {address[0]}:{address[1]} failed")
    try:
        status, _ = assoc.send_n_event_report(ds, event_type, STORAGE_COMMITMENT_PUSH,
                                              STORAGE_COMMITMENT_INSTANCE)
    finally:
        assoc.release()
    code = int(getattr(status, "Status", -1))
    if code != 0:
        raise ReportFailed(f"{requester} answered the report with status 0x{code & 0xFFFF:04X}"
                           if code >= 0 else f"{requester} did not answer the report")


def _round_failed(exc: Exception) -> None:
    log.error("storage commitment round failed: %s: %s", type(exc).__name__, exc)


def hash_matches(archive: Archive, sha256: str) -> bool:
    """Whether the stored object still hashes to its name (its plaintext, if sealed)."""
    digest = hashlib.sha256()
    with archive.storage.open_object(sha256) as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest() == sha256


Sender = Callable[[str, str, tuple[str, int], Dataset, int], None]


@dataclass
class CommitmentReporter:
    archive: Archive
    store: CommitmentStore
    copies: DurableCopies
    resolve: Resolver
    own_aet: str
    send: Sender = send_report
    clock: Callable[[], float] = time.time
    # Objects hashed again for a waiting request: once per request is enough.
    _verified: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rounds = Repeating("storage-commitment", self.round, ROUND, _round_failed)
        self.wake = self._rounds.wake  # from any thread: a request arrived, look now
        self.start = self._rounds.start
        self.stop = self._rounds.stop

    async def round(self) -> None:
        for request in await self.store.open_requests():
            if request.report is None:
                verdict = await self._judge(request)
                if verdict is None:
                    continue
                await self.store.decide(request, verdict)
                self._verified.pop((request.requester, request.transaction_uid), None)
                request = replace(request, state=REPORTING, report=verdict)
            if request.next_try <= self.clock():
                await self._deliver(request)

    async def _judge(self, request: Request) -> Verdict | None:
        sops = [i.sop_uid for i in request.items]
        local = await self.store.local_instances(sops)
        checked = self._verified.setdefault((request.requester, request.transaction_uid),
                                            set())
        held: dict[str, Held] = {}
        for sop, (sop_class, sha) in local.items():
            verified = sha in checked or await self._recheck(sha)
            if verified:
                checked.add(sha)
            held[sop] = Held(sop_class, sha, verified)
        others = await self.copies.other_holders(
            {sop: (held[sop].sha256 if sop in held and held[sop].verified else None)
             for sop in sops})
        verdict = sort_items(request.items, held, others, self.copies.required(),
                             self.clock() >= request.deadline)
        if verdict is not None and any(i.sop_uid in held for i in verdict.committed):
            # The rows are committed with synchronous=NORMAL: make them survive a power
            # loss before anyone is told they are safe.
            await self.archive.index.sync_durably()
        return verdict

    async def _recheck(self, sha: str) -> bool:
        try:
            ok = await asyncio.to_thread(hash_matches, self.archive, sha)
        except FileNotFoundError:
            return False
        except (StorageError, OSError) as exc:
            log.error("object %s unreadable at storage commitment: %s", sha[:12], exc)
            ok = False
        if not ok:
            await self.archive.set_aside(sha, "hash mismatch at storage commitment")
        return ok

    async def _deliver(self, request: Request) -> None:
        assert request.report is not None
        verdict = request.report
        address = self.resolve(request.requester)
        try:
            if address is None:
                raise ReportFailed(f"requester {request.requester} has no known address")
            ds = report_dataset(request, verdict, self.own_aet)
            await asyncio.to_thread(self.send, self.own_aet, request.requester, address, ds,
                                    SOME_FAILED if verdict.failed else ALL_COMMITTED)
        except (ReportFailed, OSError) as exc:
            pause = retry_pause(request.attempts + 1)
            log.warning("storage commitment report %s to %s not delivered (try %d): %s",
                        request.transaction_uid, request.requester, request.attempts + 1, exc)
            if pause is None:
                log.error("storage commitment report %s to %s given up after %d tries",
                          request.transaction_uid, request.requester, request.attempts + 1)
            await self.store.attempted(
                request, None if pause is None else self.clock() + pause)
            return
        await self.store.reported(request)
        log.info("storage commitment %s reported to %s: %d committed, %d failed",
                 request.transaction_uid, request.requester, len(verdict.committed),
                 len(verdict.failed))
