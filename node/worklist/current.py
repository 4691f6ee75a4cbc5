"""The current worklist from all order events (pure): the same set of events gives the
same items on every node, whatever order they arrived in.

Events apply in their order (time, then id). An order's first NW creates its item; a
later NW for the same accession, or a change, status or cancel for an accession with no
item yet, is ignored here (the store refuses it from the RIS; from another member, a
later event in the order decides). A change replaces the fields it carries; a status
report sets the status; cancel and discontinue end the item, and nothing after that
reopens it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from node.patients.events import PatientKey
from node.worklist.events import Control, OrderEvent, Status

_ENDED = {Control.CANCEL: Status.CANCELLED, Control.DISCONTINUE: Status.DISCONTINUED}


@dataclass(frozen=True)
class Item:
    accession: str
    patient: PatientKey
    status: Status = Status.SCHEDULED
    fields: dict[str, str] = field(default_factory=dict)
    created: str = ""  # the NW event's id
    updated: str = ""  # the last applied event's id

    @property
    def hidden(self) -> bool:
        return self.status.hidden


def problem(items: dict[str, Item], event: OrderEvent) -> str | None:
    """Why an order event from the RIS cannot be applied to the items now, or None."""
    item = items.get(event.accession)
    if event.control is Control.NEW:
        if item is not None:
            return f"accession {event.accession} is already ordered"
        return None
    if item is None:
        return f"no order with accession {event.accession} is known here"
    if item.status in (Status.CANCELLED, Status.DISCONTINUED):
        return f"the order with accession {event.accession} has ended ({item.status})"
    return None


def apply(items: dict[str, Item], event: OrderEvent) -> None:
    """Apply one event to ``items`` in place (events must come in their order)."""
    item = items.get(event.accession)
    if event.control is Control.NEW:
        if item is None:
            items[event.accession] = Item(event.accession, event.patient, Status.SCHEDULED,
                                          dict(event.fields), event.event_id, event.event_id)
        return
    if item is None or item.status in (Status.CANCELLED, Status.DISCONTINUED):
        return
    if event.control in _ENDED:
        items[event.accession] = replace(item, status=_ENDED[event.control],
                                         updated=event.event_id)
    elif event.control is Control.STATUS:
        items[event.accession] = replace(item, status=event.status or item.status,
                                         updated=event.event_id)
    else:
        items[event.accession] = replace(item, patient=event.patient,
                                         fields={**item.fields, **event.fields},
                                         updated=event.event_id)


def resolve(events: Iterable[OrderEvent]) -> dict[str, Item]:
    """Accession -> its item, from every event."""
    items: dict[str, Item] = {}
    for event in sorted(events, key=lambda e: e.order):
        apply(items, event)
    return items
