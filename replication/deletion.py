"""Deleting studies mesh-wide: accept signed tombstones, apply them, and gossip them.

Tombstones reach a node from ``pacsmesh delete`` (through ``replication.spool``) and
from members (``GET /mesh/tombstones``, members only: each node pulls from each live
member, sending the digest of what it holds so that a peer with the same set answers
in a line). Every tombstone is checked against the roster's admin key; one that fails
is logged once and ignored. Applying one removes the study's files and index rows,
queued copies and catalog entries, and records the audit; from then on the index
refuses the study (C-STORE and mesh copies alike).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from discovery.service import Discovery
from node.archive import Archive
from node.index import Index
from replication import spool
from replication.tombstone import Tombstone, TombstoneError, check_tombstone, digest, supersedes
from replication.tombstone_store import StudyDeletion, Tombstoned, TombstoneStore
from replication.wire import TOMBSTONES_PATH, TombstoneList

log = logging.getLogger(__name__)
FROM_ADMIN_COMMAND = "admin command"


def _stored(stone: Tombstone) -> Tombstoned:
    return Tombstoned(stone.study_uid, stone.sig, stone.deleted_by, stone.at, stone.reason,
                      stone.to_json())


def _as_tombstone(mesh_id: str, row: Tombstoned) -> Tombstone:
    return Tombstone(mesh_id, row.study_uid, row.deleted_by, row.deleted_at, row.reason, row.sig)


def routes(index: Index) -> list[web.RouteDef]:
    stones = TombstoneStore(index.db)

    async def tombstones(request: web.Request) -> web.Response:
        ours = digest(await stones.tombstone_sigs())
        if request.query.get("digest") == ours:
            return web.json_response(TombstoneList(ours, same=True).to_json())
        rows = await stones.tombstones()
        return web.json_response(
            TombstoneList(ours, tombstones=tuple(r.document for r in rows)).to_json())

    return [web.get(TOMBSTONES_PATH, tombstones)]


class Deletions:
    def __init__(
        self, archive: Archive, discovery: Discovery, clock: Callable[[], float] = time.time
    ) -> None:
        self.archive = archive
        self.discovery = discovery
        self._clock = clock
        self._stones = TombstoneStore(archive.index.db)
        self._warned: set[str] = set()
        # Told of each tombstone applied here: (study, admin's node, learnt from, removed).
        # The composition root points it at the audit trail.
        self.on_deleted: Callable[[str, str, str, StudyDeletion], None] = lambda *_: None

    async def accept(self, documents: Iterable[Any], source: str) -> int:
        """Apply the valid tombstones among ``documents``; return how many were valid."""
        roster = self.discovery.roster
        if roster is None:
            return 0
        valid = 0
        for document in documents:
            try:
                stone = check_tombstone(document, roster.mesh_id, roster.admin_key)
            except TombstoneError as exc:
                self._report_forged(document, source, exc)
                continue
            valid += 1
            await self._apply(roster.mesh_id, stone, source)
        return valid

    async def _apply(self, mesh_id: str, stone: Tombstone, source: str) -> None:
        known = await self._stones.tombstone(stone.study_uid)
        if known is not None:
            if supersedes(stone, _as_tombstone(mesh_id, known)):
                await self._stones.replace_tombstone(_stored(stone))
            return
        storage = self.archive.storage
        # Recorded before the commit, so that a crash between it and the purge leaves
        # start-up a record of the files to remove (node/reconcile.py); a superset is
        # harmless: only files no row references go.
        objects, copies = await self._stones.study_files(stone.study_uid)
        record = await asyncio.to_thread(storage.intend_removal, "removed", objects, copies)
        removed = await self._stones.delete_study(_stored(stone), source, self._clock())
        late = set(removed.objects) - set(objects)  # stored between the two reads
        extra = await asyncio.to_thread(storage.intend_removal, "removed", late)
        # Files go only once the rows' removal survives a power loss: never a row
        # pointing at a file that is gone.
        await self.archive.index.sync_durably()
        await asyncio.to_thread(storage.purge, removed.objects, removed.conflict_copies)
        for done in (record, extra):
            storage.removal_done(done)
        # The study UID is cut short and the reason (free text) kept out of the log:
        # logs above DEBUG carry no patient identifiers.
        log.warning(
            "study %s... deleted mesh-wide by the admin on node %s: %d instance(s), %d bytes"
            " removed here (tombstone from %s)", stone.study_uid[:24], stone.deleted_by[:15],
            removed.instances, removed.bytes, source[:15],
        )
        log.debug("tombstone reason for study %s: %s", stone.study_uid, stone.reason)
        self.on_deleted(stone.study_uid, stone.deleted_by, source, removed)

    def _report_forged(self, document: Any, source: str, exc: TombstoneError) -> None:
        sig = str(document.get("sig", "")) if isinstance(document, dict) else ""
        if sig[:16] not in self._warned:
            self._warned.add(sig[:16])
            log.warning("tombstone %s from %s ignored (forged or tampered?): %s", sig[:8] or "-",
                        source[:15], exc)

    async def pick_up(self) -> None:
        """Apply what ``pacsmesh delete`` left in the data dir."""
        if self.discovery.roster is None:
            return  # nothing to check them against yet: they wait
        data_dir = self.archive.storage.root
        for path, document in await asyncio.to_thread(spool.waiting, data_dir):
            valid = await self.accept([document], FROM_ADMIN_COMMAND) if document else 0
            await asyncio.to_thread(spool.done if valid else spool.reject, path)

    async def pull(self, peer: str) -> None:
        """Learn the tombstones ``peer`` holds that we lack. Raises ProbeFailed, and
        RemoteAnswerInvalid for an answer that is not a tombstone list."""
        ours = digest(await self._stones.tombstone_sigs())
        answer = TombstoneList.from_json(await self.discovery.ask_member(
            peer, "GET", TOMBSTONES_PATH, params={"digest": ours}
        ))
        if answer.same:
            return
        await self.accept(answer.tombstones, peer)
