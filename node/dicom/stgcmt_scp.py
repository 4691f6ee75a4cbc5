"""Storage Commitment Push Model SCP, the request side: N-ACTION (PS3.4 J.3).

The N-ACTION is answered at once, status only (Orthanc rejects a response that carries
a data set); the request is recorded first, so the answer means it will be reported
even across a restart. The report goes out later, on an association of its own
(node/dicom/stgcmt_report.py), once every instance is safe or the deadline passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.events import Event

from node.archive import Archive
from node.commitment import CommitmentStore, Item, Request
from node.dicom.statuses import PROCESSING_FAILURE, SUCCESS, calling_aet, status_dataset
from node.errors import RemoteFailure

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
# The well-known SOP Instance every N-ACTION and N-EVENT-REPORT of the class names.
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_COMMIT = 1  # Action Type ID, PS3.4 J.3.2.1.1

# N-ACTION statuses, PS3.7 10.1.4.1.10 and Annex C.
INVALID_ATTRIBUTE_VALUE = 0x0106
INVALID_ARGUMENT_VALUE = 0x0115
INVALID_OBJECT_INSTANCE = 0x0117
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
NO_SUCH_ACTION_TYPE = 0x0123


class BadRequest(ValueError, RemoteFailure):
    """An N-ACTION that cannot be taken: the status it gets, and why."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass(frozen=True)
class Parsed:
    transaction_uid: str
    items: tuple[Item, ...]


def _uid(value: object, what: str) -> str:
    text = str(value or "").strip()
    if not text:
        raise BadRequest(MISSING_ATTRIBUTE_VALUE, f"{what} is empty")
    if not UID(text).is_valid:
        raise BadRequest(INVALID_ATTRIBUTE_VALUE, f"{what} is not a valid UID")
    return text


def parse_action(action_type: object, instance_uid: object, info: Dataset | None) -> Parsed:
    """The transaction and its instances, or BadRequest: pure, no I/O."""
    if action_type != REQUEST_COMMIT:
        raise BadRequest(NO_SUCH_ACTION_TYPE, f"no such action type {action_type!r}")
    if str(instance_uid or "") != STORAGE_COMMITMENT_INSTANCE:
        raise BadRequest(INVALID_OBJECT_INSTANCE,
                         "requested SOP instance is not the storage commitment instance")
    if info is None:
        raise BadRequest(MISSING_ATTRIBUTE, "no action information")
    if "TransactionUID" not in info:
        raise BadRequest(MISSING_ATTRIBUTE, "no Transaction UID")
    transaction = _uid(info.TransactionUID, "Transaction UID")
    if "ReferencedSOPSequence" not in info:
        raise BadRequest(MISSING_ATTRIBUTE, "no Referenced SOP Sequence")
    sequence = info.ReferencedSOPSequence
    if not sequence:
        raise BadRequest(MISSING_ATTRIBUTE_VALUE, "Referenced SOP Sequence is empty")
    items: dict[str, Item] = {}
    for n, entry in enumerate(sequence, 1):
        for keyword in ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID"):
            if keyword not in entry:
                raise BadRequest(MISSING_ATTRIBUTE, f"item {n} has no {keyword}")
        item = Item(_uid(entry.ReferencedSOPClassUID, f"item {n} SOP Class UID"),
                    _uid(entry.ReferencedSOPInstanceUID, f"item {n} SOP Instance UID"))
        items.setdefault(item.sop_uid, item)  # listed twice: reported once
    return Parsed(transaction, tuple(items.values()))


Resolver = Callable[[str], "tuple[str, int] | None"]


class CommitmentSCP:
    """The EVT_N_ACTION handler; ``wake`` tells the reporter a request arrived."""

    def __init__(self, archive: Archive, store: CommitmentStore, resolve: Resolver,
                 deadline: float, wake: Callable[[], None]) -> None:
        self._archive = archive
        self._store = store
        self._resolve = resolve
        self._deadline = deadline
        self._wake = wake

    def on_action(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        requester = calling_aet(event)
        try:
            try:
                info = event.action_information
            except Exception as exc:  # pydicom raises many kinds on a garbled data set
                raise BadRequest(INVALID_ARGUMENT_VALUE,
                                 f"undecodable action information: {type(exc).__name__}"
                                 ) from None
            parsed = parse_action(event.action_type, event.request.RequestedSOPInstanceUID,
                                  info)
            # Without an address the report could never go out: refuse now, not later.
            if self._resolve(requester) is None:
                raise BadRequest(PROCESSING_FAILURE,
                                 f"requester {requester} has no known address for the report")
        except BadRequest as exc:
            log.warning("storage commitment from %s refused (0x%04X): %s",
                        requester, exc.status, exc)
            return status_dataset(exc.status, str(exc)), None
        request = Request(parsed.transaction_uid, requester, parsed.items,
                          time.time() + self._deadline)
        try:
            new = self._archive.on_loop(self._store.add(request))
        except Exception as exc:
            log.error("storage commitment from %s not recorded: %s: %s",
                      requester, type(exc).__name__, exc)
            return status_dataset(PROCESSING_FAILURE, "Request could not be recorded"), None
        log.info("storage commitment %s from %s: %d instance(s)%s", parsed.transaction_uid,
                 requester, len(parsed.items), "" if new else " (repeated: first one stands)")
        self._wake()
        return SUCCESS, None
