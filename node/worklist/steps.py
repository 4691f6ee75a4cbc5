"""MPPS to the worklist: the :class:`node.mpps.StepListener` that makes a performed
step's status the status of the scheduled items it names (by accession number, else by
scheduled procedure step id), as order events of their own."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from node.mpps import COMPLETED, DISCONTINUED, IN_PROGRESS, StepChange, StepLink
from node.worklist.current import Item
from node.worklist.events import Control, OrderEvent, Status
from node.worklist.store import OrderRefused, WorklistStore

log = logging.getLogger(__name__)

STATUS = {IN_PROGRESS: Status.IN_PROGRESS, COMPLETED: Status.COMPLETED,
          DISCONTINUED: Status.DISCONTINUED}


def linked_items(items: dict[str, Item], link: StepLink) -> list[Item]:
    """The items a Scheduled Step Attributes Sequence item names."""
    if link.accession_number:
        item = items.get(link.accession_number)
        if item is None:
            return []
        step = item.fields.get("ScheduledProcedureStepID", "")
        same_step = not link.scheduled_step_id or not step or step == link.scheduled_step_id
        return [item] if same_step else []
    if link.scheduled_step_id:
        return [i for _, i in sorted(items.items())
                if i.fields.get("ScheduledProcedureStepID") == link.scheduled_step_id]
    return []


class WorklistSteps:
    """Told of each committed MPPS create or set (node.mpps.MppsStore.tell)."""

    def __init__(self, store: WorklistStore, origin: str = "") -> None:
        self._store = store
        self._origin = origin

    async def step_changed(self, change: StepChange) -> None:
        status = STATUS.get(change.status)
        if status is None:
            return
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        for link in change.links:
            for item in linked_items(self._store.items, link):
                if item.hidden or item.status is status:
                    continue  # an ended item stays ended; nothing new to say
                event = OrderEvent(f"MPPS|{change.mpps_uid}|{change.status}|{item.accession}",
                                   at, Control.STATUS, item.accession, item.patient, {},
                                   status, self._origin)
                try:
                    await self._store.accept(event)
                except OrderRefused as exc:  # ended meanwhile
                    log.info("MPPS %s: worklist item not updated: %s", change.mpps_uid, exc)
                    continue
                log.info("MPPS %s: a worklist item is now %s", change.mpps_uid, status)
                log.debug("MPPS %s: worklist item %s", change.mpps_uid, item.accession)
