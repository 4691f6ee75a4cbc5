"""What the DIMSE side tells the audit trail, and the calling-AE gate on associations.

C-STOREs are summarised per association: one row per (patient, study) when the
association ends, with the count of instances and how they ended. A modality sends
hundreds of instances per study; a row each would multiply the trail for no more
information about who accessed what.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from node.audit import Action, AuditEvent, AuditTrail, Outcome
from node.dicom.access import AccessPolicy

log = logging.getLogger(__name__)
NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.20 "Refused: Not Authorized"
# A-ASSOCIATE-RJ: rejected-permanent, by the DUL service user, calling AE not recognised.
_REJECT_CALLING_AET = (0x01, 0x01, 0x03)


def requestor(assoc: Association) -> tuple[str, str]:
    """(calling AE title, IP address) of the association's peer."""
    req = assoc.requestor
    # Until negotiation ends the requestor's title is only in its request primitive.
    title = req.ae_title or getattr(req.primitive, "calling_ae_title", "")
    return str(title).strip(), str(req.address or "")


class DicomAudit:
    def __init__(self, trail: AuditTrail | None, policy: AccessPolicy) -> None:
        self.trail = trail
        self.policy = policy
        self._lock = threading.Lock()
        # id(association) -> (patient, study, outcome) -> instances
        self._stores: dict[int, Counter[tuple[str, str, str]]] = {}

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_RELEASED, self.on_ended),
            (evt.EVT_ABORTED, self.on_ended),
            # A peer that drops the connection without a release or abort still ends here.
            (evt.EVT_CONN_CLOSE, self.on_ended),
        ]

    def record(self, event: Event | Association, action: Action, outcome: Outcome, *,
               patient_id: str = "", study_uid: str = "", detail: str = "") -> None:
        if self.trail is None:
            return
        aet, address = requestor(event if isinstance(event, Association) else event.assoc)
        self.trail.record(AuditEvent(
            action=action, outcome=outcome, calling_aet=aet, address=address,
            patient_id=patient_id, study_uid=study_uid, detail=detail))

    # --- associations --------------------------------------------------------------------

    def on_requested(self, event: Event) -> None:
        if event.assoc.is_rejected:
            return  # the association gate (node.dicom.gate) turned it away already
        aet, _ = requestor(event.assoc)
        if self.policy.may_associate(aet):
            return
        log.warning("association from %s rejected: AE title not allowed (access = strict)", aet)
        event.assoc.acse.send_reject(*_REJECT_CALLING_AET)
        self.record(event, Action.REFUSAL, Outcome.REFUSED,
                    detail="association rejected: calling AE title not allowed (access=strict)")
        event.assoc.kill()

    def on_accepted(self, event: Event) -> None:
        self.record(event, Action.ASSOCIATION, Outcome.SUCCESS, detail="association accepted")

    def on_rejected(self, event: Event) -> None:
        self.record(event, Action.REFUSAL, Outcome.REFUSED, detail="association rejected")

    # --- storage -------------------------------------------------------------------------

    def stored(self, event: Event, patient_id: str, study_uid: str, outcome: Outcome) -> None:
        """Count one C-STORE; rows are written when the association ends."""
        with self._lock:
            counts = self._stores.setdefault(id(event.assoc), Counter())
            counts[(patient_id, study_uid, outcome)] += 1

    def on_ended(self, event: Event) -> None:
        with self._lock:
            counts = self._stores.pop(id(event.assoc), None)
        for (patient_id, study_uid, outcome), n in sorted((counts or {}).items()):
            self.record(event, Action.STORE, Outcome(outcome), patient_id=patient_id,
                        study_uid=study_uid, detail=f"{n} instance(s)")

    # --- retrieval -----------------------------------------------------------------------

    def refuse_retrieve(self, assoc: Association, request: Any) -> tuple[int, str] | None:
        """0x0124 (Refused: Not Authorized) for a C-GET/C-MOVE from an unknown AE, with
        an Error Comment (at most 64 characters) that tells its user what to do."""
        aet, _ = requestor(assoc)
        if self.policy.may_retrieve(aet):
            return None
        what = "C-MOVE" if hasattr(request, "MoveDestination") else "C-GET"
        log.warning("%s from %s refused: AE title not known to this node (allow it with"
                    " --allowed-aet %s or allowed_aets in pacsmesh.toml)", what, aet, aet)
        self.record(assoc, Action.REFUSAL, Outcome.REFUSED,
                    detail=f"{what} refused: calling AE title not known to this node")
        return NOT_AUTHORIZED, f"{aet[:16]} may not retrieve: add it to allowed_aets"[:64]
