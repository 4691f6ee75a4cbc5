"""Where retrieved instances wait before they go into the archive: a folder of Part 10
files, and the C-STORE handler (C-GET sub-operations, or a temporary C-MOVE SCP) that
fills it. Files are the received bytes behind a file meta header, as the node stores them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from node.dicom.scp import STORAGE_SYNTAXES, part10_bytes, storage_classes
from node.dicom.send_scu import Outgoing
from node.dicom.statuses import OUT_OF_RESOURCES, SUCCESS

log = logging.getLogger(__name__)


class Spool:
    """Received instances, one file each; the same instance again replaces nothing."""

    def __init__(self, folder: Path, on_receive: Callable[[], None] = lambda: None) -> None:
        self.folder = folder
        self.on_receive = on_receive
        self._items: dict[str, Outgoing] = {}
        self._lock = threading.Lock()

    @property
    def items(self) -> list[Outgoing]:
        with self._lock:
            return list(self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def on_store(self, event: Event) -> int:
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        try:
            data = part10_bytes(event)
            # Named by a hash of the UID: UIDs from a peer are not trusted as file names.
            path = self.folder / hashlib.sha256(sop_uid.encode()).hexdigest()
            path.write_bytes(data)
        except OSError as exc:
            log.error("cannot keep a received instance: %s", exc)
            return OUT_OF_RESOURCES
        item = Outgoing(path, sop_uid, str(request.AffectedSOPClassUID or ""),
                        str(event.context.transfer_syntax))
        with self._lock:
            new = sop_uid not in self._items
            self._items[sop_uid] = item
        if new:
            self.on_receive()
        return SUCCESS


class TemporarySCP:
    """A storage SCP that fills a spool while it runs: the C-MOVE destination when no
    node runs on the data dir."""

    def __init__(self, aet: str, bind: str, port: int, spool: Spool) -> None:
        self.ae = AE(ae_title=aet)
        self.ae.maximum_pdu_size = 0
        for uid in storage_classes():
            self.ae.add_supported_context(uid, STORAGE_SYNTAXES)
        self.address = (bind, port)
        self.spool = spool
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        """Raises OSError if the port is taken."""
        self._server = self.ae.start_server(
            self.address, block=False, evt_handlers=[(evt.EVT_C_STORE, self.spool.on_store)])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()
