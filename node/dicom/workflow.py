"""The scheduled-workflow services on the node's DICOM port: Storage Commitment Push
Model (node/dicom/stgcmt_scp.py, stgcmt_report.py), MPPS (node/dicom/mpps_scp.py) and
the Modality Worklist (node/dicom/worklist_scp.py; node/dicom/scp.py hands it the
worklist's C-FIND requests).

One object, so that node/dicom/scp.py registers them in two lines and node/app.py
starts and stops the commitment reporter with the rest of the node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pynetdicom import evt

from node.archive import Archive
from node.commitment import CommitmentStore, DurableCopies, LoneNode
from node.config import NodeConfig
from node.dicom.audit_hooks import DicomAudit
from node.dicom.mpps_scp import MPPS_CLASS, MppsSCP
from node.dicom.stgcmt_report import CommitmentReporter
from node.dicom.stgcmt_scp import STORAGE_COMMITMENT_PUSH, CommitmentSCP, Resolver
from node.dicom.worklist_scp import MODALITY_WORKLIST_FIND, WorklistSCP
from node.mpps import MppsStore, StepListener
from node.worklist.steps import WorklistSteps
from node.worklist.store import WorklistStore

WORKFLOW_CLASSES = (STORAGE_COMMITMENT_PUSH, MPPS_CLASS, MODALITY_WORKLIST_FIND)


class Workflow:
    def __init__(self, config: NodeConfig, archive: Archive, audit: DicomAudit,
                 resolve: Resolver, copies: DurableCopies | None = None,
                 steps: StepListener | None = None,
                 worklist: WorklistStore | None = None) -> None:
        """``copies`` counts the mesh's durable copies (none: a lone node, whose own
        copy is all there is); ``steps`` is told of each procedure step change (by
        default, with a ``worklist``, the worklist's items follow them)."""
        db = archive.index.db
        self.commitments = CommitmentStore(db)
        self.reporter = CommitmentReporter(archive, self.commitments, copies or LoneNode(),
                                           resolve, config.aet)
        self._commit = CommitmentSCP(archive, self.commitments, resolve,
                                     config.storage_commitment_deadline, self.reporter.wake)
        if steps is None and worklist is not None:
            steps = WorklistSteps(worklist, config.aet)
        self.mpps = MppsStore(db, steps)
        self._mpps = MppsSCP(archive, self.mpps, audit)
        self.worklist = WorklistSCP(archive, worklist, audit)

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        return [(evt.EVT_N_ACTION, self._commit.on_action),
                (evt.EVT_N_CREATE, self._mpps.on_create),
                (evt.EVT_N_SET, self._mpps.on_set)]

    async def start(self) -> None:
        await self.reporter.start()

    async def stop(self) -> None:
        await self.reporter.stop()
