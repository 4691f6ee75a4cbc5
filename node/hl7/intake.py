"""From an accepted HL7 message to a durable event: the listener's ``apply``. ADT
messages become patient events; orders (ORM, OMI) become order events."""

from __future__ import annotations

from node.hl7.errors import ErrorCode, error, reject
from node.hl7.listener import Apply
from node.hl7.message import AdtMessage, to_event
from node.hl7.orders import OrderMessage, to_order_event
from node.patients.store import EventRefused, PatientStore
from node.worklist.store import OrderRefused, WorklistStore


def applier(store: PatientStore, origin: str, worklist: WorklistStore | None = None) -> Apply:
    """Stores each message as an event received at ``origin`` (this node's id); a merge
    or an order this node cannot apply is answered AE, nothing stored; an order without a
    worklist here, AR."""
    async def apply(message: AdtMessage | OrderMessage) -> None:
        if isinstance(message, OrderMessage):
            if worklist is None:
                raise reject(ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
                             "this node keeps no worklist", "MSH^1^9")
            try:
                await worklist.accept(to_order_event(message, origin))
            except OrderRefused as exc:
                code = ErrorCode.DUPLICATE_KEY if exc.duplicate else ErrorCode.UNKNOWN_KEY
                omi = message.header.trigger == "O23"
                raise error(code, str(exc), "IPC^1^1" if omi else "OBR^1^18") from None
            return
        try:
            await store.accept(to_event(message, origin))
        except EventRefused as exc:
            code = (ErrorCode.UNKNOWN_KEY if str(exc).startswith("no patient")
                    else ErrorCode.DUPLICATE_KEY)
            raise error(code, str(exc), exc.location) from None
    return apply
