"""Modality Performed Procedure Step SCP: N-CREATE and N-SET (PS3.4 F.7).

The rules and the store are node/mpps.py; these handlers read the request, answer with
the status a modality expects, and leave the store as it was on any refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.events import Event

from node.archive import Archive
from node.audit import Action, Outcome
from node.dicom.audit_hooks import DicomAudit
from node.dicom.statuses import PROCESSING_FAILURE, SUCCESS, calling_aet, status_dataset
from node.mpps import MppsStore, StepChange, StepRefused

log = logging.getLogger(__name__)

MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"


def _refusal(exc: StepRefused) -> Dataset:
    ds = status_dataset(exc.status, str(exc))
    if exc.error_id is not None:
        ds.ErrorID = exc.error_id
    return ds


class MppsSCP:
    def __init__(self, archive: Archive, store: MppsStore, audit: DicomAudit) -> None:
        self._archive = archive
        self._store = store
        self._audit = audit

    def on_create(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        given = event.request.AffectedSOPInstanceUID
        uid = str(given) if given else str(generate_uid())
        change = self._apply(event, "N-CREATE", lambda: self._store.create(
            uid, event.attribute_list, calling_aet(event)))
        if not isinstance(change, StepChange):
            return change, None
        self._done(event, "created", change)
        reply = Dataset()
        if not given:  # pynetdicom moves it into the response's Affected SOP Instance UID
            reply.AffectedSOPInstanceUID = uid
        return SUCCESS, reply

    def on_set(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        uid = str(event.request.RequestedSOPInstanceUID or "")
        change = self._apply(event, "N-SET", lambda: self._store.update(
            uid, event.modification_list))
        if not isinstance(change, StepChange):
            return change, None
        self._done(event, "set", change)
        return SUCCESS, None

    def _apply(self, event: Event, what: str,
               change: Callable[[], Coroutine[Any, Any, StepChange]]) -> StepChange | Dataset:
        """The committed change, or the status dataset of a refusal (nothing stored).
        ``change`` decodes the request's data set too: a garbled one fails here."""
        source = calling_aet(event)
        try:
            return self._archive.on_loop(change())
        except StepRefused as exc:
            log.warning("MPPS %s from %s refused (0x%04X): %s", what, source, exc.status, exc)
            return _refusal(exc)
        except Exception as exc:
            return self._failed(what, source, exc)

    def _failed(self, what: str, source: str, exc: Exception) -> Dataset:
        # An undecodable attribute list, or the index failing: nothing was stored.
        log.error("MPPS %s from %s failed: %s: %s", what, source, type(exc).__name__, exc)
        return status_dataset(PROCESSING_FAILURE, f"{what} could not be processed")

    def _done(self, event: Event, verb: str, change: StepChange) -> None:
        log.info("MPPS %s %s: %s", change.mpps_uid, verb, change.status)
        try:
            self._archive.on_loop(self._store.tell(change))
        except Exception as exc:
            # The step is stored and answered; the worklist reads mpps_steps to catch up.
            log.error("MPPS %s: the worklist was not told: %s: %s", change.mpps_uid,
                      type(exc).__name__, exc)
        study = change.links[0].study_uid if change.links else ""
        self._audit.record(event, Action.PROCEDURE_STEP, Outcome.SUCCESS, study_uid=study,
                           detail=f"MPPS {verb}: {change.status}")
