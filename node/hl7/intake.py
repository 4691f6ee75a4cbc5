"""From an accepted HL7 message to a durable patient event: the listener's ``apply``."""

from __future__ import annotations

from node.hl7.errors import ErrorCode, error
from node.hl7.listener import Apply
from node.hl7.message import AdtMessage, to_event
from node.patients.store import EventRefused, PatientStore


def applier(store: PatientStore, origin: str) -> Apply:
    """Stores each message as a patient event received at ``origin`` (this node's id);
    a merge this node cannot apply is answered AE, nothing stored."""
    async def apply(message: AdtMessage) -> None:
        try:
            await store.accept(to_event(message, origin))
        except EventRefused as exc:
            code = (ErrorCode.UNKNOWN_KEY if str(exc).startswith("no patient")
                    else ErrorCode.DUPLICATE_KEY)
            raise error(code, str(exc), exc.location) from None
    return apply
