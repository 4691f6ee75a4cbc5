"""C-STORE SCU: push files to a peer, stored bytes untouched where it accepts them.

Each class is offered in every syntax its files are stored in (one context each, so the
peer can take the bytes as they are) and uncompressed, for peers that accept nothing
else: those get a decompressed copy (node/transcode.py). A failed store is retried a few
times with backoff, on a fresh association when the old one broke.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pynetdicom.association import Association

from node.config import RemoteAE
from node.dicom.retrieve_scp import accepted_by_class, move_contexts
from node.dicom.scu import RETRY_DELAYS, AssociationFailed, associate, client_ae, with_retries
from node.storage import PlainFile, TamperedObject
from node.transcode import TranscodeError, choose_plan, prepare

log = logging.getLogger(__name__)
# Statuses a store may end with and still count as held by the peer (PS3.4 B.2.3).
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class Outgoing:
    """One Part 10 file to send: a plain file at ``path``, or, with ``opener``, a stored
    object read through storage (which may be sealed at rest)."""

    path: Path
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    opener: Callable[[], PlainFile] | None = None

    def open(self) -> PlainFile:
        return self.opener() if self.opener is not None else PlainFile(self.path)


@dataclass
class Counts:
    completed: int = 0
    failed: int = 0
    warning: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.completed += other.completed
        self.failed += other.failed
        self.warning += other.warning
        return self

    def __str__(self) -> str:
        return f"completed {self.completed}, failed {self.failed}, warning {self.warning}"


class _Sender:
    """One association at a time, opened again after a failure broke it."""

    def __init__(self, remote: RemoteAE, calling_aet: str, items: list[Outgoing],
                 timeout: float) -> None:
        self.remote = remote
        self.ae = client_ae(calling_aet, timeout)
        self.contexts = move_contexts(items)
        self.assoc: Association | None = None
        self.accepted: dict[str, set[str]] = {}  # of the open association, by SOP class
        self.connected_once = False

    def store(self, item: Outgoing) -> int:
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = associate(self.ae, self.remote, contexts=self.contexts)
            self.accepted = accepted_by_class(self.assoc.accepted_contexts)
            self.connected_once = True
        accepted = self.accepted.get(item.sop_class_uid, set())
        plain = item.open()
        try:
            payload = prepare(plain.path, choose_plan(item.transfer_syntax_uid, accepted))
            rsp = self.assoc.send_c_store(payload)
        finally:
            plain.close()
        if "Status" not in rsp:
            self.close(abort=True)
            raise AssociationFailed(f"{self.remote} did not answer a C-STORE")
        return int(rsp.Status)

    def close(self, abort: bool = False) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.abort() if abort else self.assoc.release()
        self.assoc = None


def send(
    remote: RemoteAE, calling_aet: str, items: Iterable[Outgoing],
    advance: Callable[[], None] = lambda: None, timeout: float = 30.0,
    delays: tuple[float, ...] = RETRY_DELAYS,
) -> Counts:
    """Store every item at ``remote``. Raises AssociationFailed if nothing can connect."""
    items = list(items)
    counts = Counts()
    sender = _Sender(remote, calling_aet, items, timeout)
    try:
        for item in items:
            status = _send_one(sender, item, delays)
            if status == 0x0000:
                counts.completed += 1
            elif status in WARNING_STATUSES:
                counts.warning += 1
            else:
                counts.failed += 1
            advance()
    finally:
        sender.close()
    return counts


def _send_one(sender: _Sender, item: Outgoing, delays: tuple[float, ...]) -> int:
    """The instance's last status; -1 when it could not be sent at all."""
    try:
        status = with_retries(lambda _n: sender.store(item),
                              lambda s: s == 0x0000 or s in WARNING_STATUSES, delays)
    except TranscodeError as exc:
        log.warning("instance %s cannot be sent: %s", item.sop_uid, exc)
        return -1
    except AssociationFailed as exc:
        if not sender.connected_once:
            raise  # the peer is not there at all: one error, not one per instance
        log.warning("instance %s not sent: %s", item.sop_uid, exc)
        return -1
    except TamperedObject as exc:
        # Scrub, or the node's next read, sets it aside for repair from a replica.
        log.error("instance %s cannot be sent: %s", item.sop_uid, exc)
        return -1
    except OSError as exc:
        # The stored file went missing or unreadable (scrub may have quarantined it).
        log.warning("instance %s cannot be read: %s", item.sop_uid, exc)
        return -1
    if status != 0x0000 and status not in WARNING_STATUSES:
        log.warning("instance %s refused by %s: status 0x%04X",
                    item.sop_uid, sender.remote, status)
    return status

