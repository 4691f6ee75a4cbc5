"""The DICOM port's doors: association slots at accept, and the calling AE's claim at
the association request. Decisions are :mod:`node.dicom.admission` and
:mod:`node.dicom.claims`; this module logs, audits (throttled) and rejects."""

from __future__ import annotations

import logging
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from node.audit import Action, AuditEvent, AuditTrail, Outcome
from node.dicom.admission import Admission, Clock, RefusalThrottle, Refused, Slot
from node.dicom.audit_hooks import requestor
from node.dicom.claims import KnownPeers
from node.identity import node_id_for

log = logging.getLogger(__name__)
# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
_REJECT_CALLING_AET = (0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
_REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient, presentation, local limit exceeded


def _escape(text: str) -> str:
    """Network text for a log line: control characters shown, not obeyed."""
    return text.encode("ascii", "backslashreplace").decode().translate(
        {c: f"\\x{c:02x}" for c in range(32)})


def peer_cert_node_id(assoc: Association) -> str | None:
    """The node id of the certificate the peer showed over DICOM TLS, if it showed one."""
    sock = getattr(assoc.dul.socket, "socket", None)
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        der = getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    return node_id_for(der) if der else None


class AssociationGate:
    def __init__(self, admission: Admission, known: KnownPeers, trail: AuditTrail | None,
                 clock: Clock = time.monotonic) -> None:
        self.admission = admission
        self.known = known
        self.trail = trail
        self.throttle = RefusalThrottle(clock)

    def handlers(self) -> list[tuple[Any, Any]]:
        """Bound before the access gate, so a claim is checked before anything else."""
        return [(evt.EVT_REQUESTED, self.on_requested)]

    # --- at accept (the accepting thread: nothing here may block) ------------------------

    def on_connect(self, address: str) -> Slot | None:
        decision = self.admission.connect(address, self.known.eligible_address(address))
        if isinstance(decision, Slot):
            return decision
        self._refused("connection", "", address, decision)
        return None

    def on_timeout(self, address: str, why: str) -> None:
        """A connection the socket closed because it stopped sending (node.dicom.reactor)."""
        self._refused("connection", "", address, Refused(why), verb="closed")

    # --- at the association request ------------------------------------------------------

    def on_requested(self, event: Event) -> None:
        assoc = event.assoc
        sock = assoc.dul.socket
        if sock is not None:
            sock.request_deadline = None  # the request is complete: no longer a deadline
        if assoc.is_rejected or assoc.is_aborted:
            return
        aet, address = requestor(assoc)
        cert = peer_cert_node_id(assoc)
        claim = self.known.member_claim(aet, address, cert)
        if claim is not None:
            self._reject(assoc, aet, address, Refused(claim), _REJECT_CALLING_AET)
            return
        slot: Slot | None = getattr(assoc, "admission_slot", None)
        if slot is None:
            return
        refused = self.admission.requested(slot, self.known.consistent(aet, address, cert))
        if refused is not None:
            self._reject(assoc, aet, address, refused, _REJECT_LOCAL_LIMIT)

    def _reject(self, assoc: Association, aet: str, address: str, refused: Refused,
                reason: tuple[int, int, int]) -> None:
        assoc.acse.send_reject(*reason)
        self._refused("association", aet, address, refused)
        assoc.kill()

    def _refused(self, what: str, aet: str, address: str, refused: Refused,
                 verb: str = "refused") -> None:
        count = self.throttle.report(f"{what}:{verb}:{refused.reason}", address)
        if count is None:
            return
        more = f" ({count - 1} more like it held back)" if count > 1 else ""
        title = f" as {_escape(aet)}" if aet else ""
        log.warning("DICOM %s from %s%s %s: %s%s", what, address, title, verb,
                    refused.reason, more)
        if self.trail is not None:
            self.trail.record(AuditEvent(
                action=Action.REFUSAL, outcome=Outcome.REFUSED, calling_aet=aet,
                address=address, detail=f"DICOM {what} {verb}: {refused.reason}"
                + (f" ({count} such refusals since the last row)" if count > 1 else "")))
