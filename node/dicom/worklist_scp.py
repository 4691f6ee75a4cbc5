"""Modality Worklist SCP: C-FIND of the Modality Worklist Information Model - FIND
(PS3.4 K). Matching is node/worklist/find.py; this reads the request and answers with
the statuses a modality expects. The items are the store's, read whole (the store
replaces its dict on every change, so a thread of pynetdicom reads one consistent set).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from node.archive import Archive
from node.audit import Action, Outcome
from node.dicom.audit_hooks import DicomAudit
from node.dicom.statuses import CANCEL, CANNOT_UNDERSTAND, PENDING, calling_aet, status_dataset
from node.worklist.find import MODALITY_WORKLIST_FIND, WorklistQueryError, find, parse_query
from node.worklist.store import WorklistStore

log = logging.getLogger(__name__)

__all__ = ["MODALITY_WORKLIST_FIND", "WorklistSCP"]


class WorklistSCP:
    def __init__(self, archive: Archive, store: WorklistStore | None,
                 audit: DicomAudit) -> None:
        self._archive = archive
        self._store = store
        self._audit = audit

    def on_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        source = calling_aet(event)
        try:
            query = parse_query(event.identifier)
            patients = self._archive.index.patients
            self._archive.on_loop(patients.current())
            items = list(self._store.items.values()) if self._store is not None else []
            found = find(query, items, patients.coerce)
        except WorklistQueryError as exc:
            log.warning("worklist C-FIND from %s refused (0x%04X): %s", source, exc.status, exc)
            yield status_dataset(exc.status, str(exc)), None
            return
        except Exception as exc:  # the identifier does not decode, or the index fails
            log.error("worklist C-FIND from %s failed: %s: %s", source, type(exc).__name__,
                      exc)
            yield status_dataset(CANNOT_UNDERSTAND, "Unable to process the query"), None
            return
        log.info("worklist C-FIND from %s: %d match(es)", source, len(found))
        self._audit.record(event, Action.QUERY, Outcome.SUCCESS,
                           detail=f"modality worklist, {len(found)} match(es)")
        for ds in found:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, ds
