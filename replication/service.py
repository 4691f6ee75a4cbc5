"""Replication as a running service: every study on its R owners, through the outbox.

1. The local change feed is read from a persisted checkpoint; each instance this node
   received from outside the mesh gets one outbox row per owner (rendezvous placement
   over the roster), in the same transaction that moves the checkpoint.
2. Workers send due rows; a success deletes the row, a failure postpones it with
   tenacity's jittered exponential wait (replication/retry.py), and a peer that keeps
   failing is circuit-broken. Connection drops within one send are retried at once.
Instances received from the mesh are not forwarded again: their sender owns that job.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from discovery.probe import ProbeFailed, Refused
from discovery.service import Discovery
from node.archive import Archive
from node.storage import TamperedObject
from node.tasks import cancel_and_wait
from replication.antientropy import missing_at
from replication.breaker import CircuitBreaker
from replication.deletion import Deletions
from replication.feed import CHANGES_PATH
from replication.outgoing import send_object
from replication.placement import DEFAULT_REPLICAS, owners, stand_ins_to_fill
from replication.progress import Backlog, RateWindow, catch_up
from replication.retry import outbox_wait, quick_retries

log = logging.getLogger(__name__)
STATE = ("replication", "local_seq")
LOOP_INTERVAL = 0.5
ANTI_ENTROPY_INTERVAL = 10.0
CATALOG_INTERVAL = 2.0
TOMBSTONE_INTERVAL = 2.0
PARALLEL_SENDS = 4
FINAL_REFUSALS = {409: "it holds another version of the instance",
                  410: "the study was deleted from the mesh"}
NOT_STORABLE = 415  # the owner's verdict on the bytes themselves (node/dicom_validate.py)
# How long a delivery is remembered, to drop a repair's stale verdict that it is missing.
DELIVERY_MEMORY = 300.0


@dataclass(frozen=True)
class ReplicationSettings:
    replicas: int = DEFAULT_REPLICAS
    # An owner unreachable this long gets a stand-in: the next member in rendezvous order
    # takes a hinted copy, which anti-entropy hands back when the owner returns.
    hint_after: float = 60.0


class Replicator:
    def __init__(
        self, archive: Archive, discovery: Discovery, settings: ReplicationSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.archive = archive
        self.discovery = discovery
        self.settings = settings
        self._clock = clock
        self._breakers: defaultdict[str, CircuitBreaker] = defaultdict(
            lambda: CircuitBreaker(self._clock))
        self._task: asyncio.Task[None] | None = None
        self._sending: set[tuple[str, str]] = set()
        self._next_repair: dict[str, float] = {}  # per peer; a peer back alive goes first
        self._down_since: dict[str, float] = {}
        # Holdings are scanned for stand-in duties when the set of long-down owners
        # changes, then on anti-entropy's rhythm: a scan reads every instance's row.
        self._scanned_for: frozenset[str] = frozenset()
        self._next_holdings_scan = 0.0
        # Each study's stand-ins to fill, for one (members, long-down) pair: placement
        # hashes every member per study, and the scan repeats every few seconds.
        self._duties: dict[str, list[str]] = {}
        self._duties_for: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self._next_catalog: dict[str, float] = {}
        self._next_tombstones: dict[str, float] = {}
        self.deletions = Deletions(archive, discovery, clock)
        self._rates: defaultdict[str, RateWindow] = defaultdict(
            lambda: RateWindow(self._clock))
        self._backlogs: dict[str, Backlog] = {}
        self._delivered_at: dict[tuple[str, str], float] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replication")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                if self.discovery.is_member:
                    # Deletions first: nothing below may copy a study deleted meanwhile.
                    await self.deletions.pick_up()
                    await self._tombstone_round()
                    await self._enqueue_local_changes()
                    await self._repair_round()
                    await self._hint_round()
                    await self._send_due()
                    await self._observe_backlogs()
                    await self._catalog_round()
            except Exception as exc:  # one bad round must not end replication
                log.exception("replication round failed: %s", exc)
            await asyncio.sleep(LOOP_INTERVAL)

    async def _enqueue_local_changes(self) -> None:
        index = self.archive.index
        state = await index.load_state(STATE[0])
        checkpoint = int(state.get(STATE[1], 0))
        changes = await index.changes_since(checkpoint, 500)
        if not changes:
            return
        members = self.discovery.members()
        me = self.discovery.node_id
        rows = []
        for change in changes:
            if change["kind"] != "add" or not change["sha256"]:
                continue
            if str(change["source_aet"] or "").startswith("mesh:"):
                continue
            for target in owners(change["study_uid"], members, self.settings.replicas):
                if target != me:
                    rows.append((change["sop_uid"], target, change["study_uid"],
                                 change["sha256"]))
        await index.enqueue(rows, (STATE[0], STATE[1], changes[-1]["seq"]))
        if rows:
            log.info("%d copies queued for %d owners", len(rows), len({r[1] for r in rows}))

    async def _repair_round(self) -> None:
        """Anti-entropy with each live member, periodically and as soon as it is back."""
        # A peer's tombstones are asked for before anything is compared with it, each
        # time it comes back: a node returning from an outage otherwise offers deleted
        # studies (refused, but for nothing) before it learns they are deleted.
        for peer in self._due(self._next_repair, ANTI_ENTROPY_INTERVAL):
            if peer not in self._next_tombstones:
                self._next_repair.pop(peer, None)  # its turn comes again next round
                continue
            started = self._clock()
            try:
                rows = await missing_at(self.archive.index, self.discovery, peer,
                                        self.settings.replicas)
            except (ProbeFailed, ValueError, TypeError, AttributeError) as exc:
                log.info("anti-entropy with %s failed: %s", peer[:15], exc)
                continue
            # A copy delivered while the peer's lists were being read is not missing:
            # queueing it again would send it twice.
            rows = [r for r in rows if self._delivered_at.get((r[0], r[1]), -1.0) < started]
            added = await self.archive.index.add_to_outbox(rows) if rows else 0
            if added:
                log.info("anti-entropy: %d copies owed to %s queued", added, peer[:15])

    def _due(self, schedule: dict[str, float], interval: float) -> list[str]:
        """Live members whose turn has come in ``schedule``, which moves on by
        ``interval``. A member that is down loses its turn, so it goes first when back."""
        now, due = self._clock(), []
        for peer in self.discovery.members():
            if peer == self.discovery.node_id:
                continue
            if not self.discovery.is_alive(peer):
                schedule.pop(peer, None)
                continue
            if now >= schedule.get(peer, 0.0):
                schedule[peer] = now + interval
                due.append(peer)
        return due

    async def _tombstone_round(self) -> None:
        """Pull tombstones from each live member; one back from an outage goes first,
        before anti-entropy could offer it (or take from it) a deleted study."""
        for peer in self._due(self._next_tombstones, TOMBSTONE_INTERVAL):
            try:
                await self.deletions.pull(peer)
            except (ProbeFailed, KeyError, TypeError, AttributeError) as exc:
                log.info("tombstone pull from %s failed: %s", peer[:15], exc)

    async def _catalog_round(self) -> None:
        """Read each live member's change feed from where we stopped: the catalog."""
        index = self.archive.index
        due = self._due(self._next_catalog, CATALOG_INTERVAL)
        if not due:
            return
        checkpoints = await index.load_state("catalog")
        for peer in due:
            since = int(checkpoints.get(peer, 0))
            try:
                while True:
                    page = await self.discovery.ask_member(
                        peer, "GET", CHANGES_PATH, params={"since": str(since)}
                    )
                    since = int(page["next"])
                    await index.record_catalog_changes(peer, page["changes"], since)
                    if not page["more"]:
                        break
            except (ProbeFailed, KeyError, TypeError, ValueError) as exc:
                log.info("catalog pull from %s failed: %s", peer[:15], exc)

    def _long_down(self) -> set[str]:
        now = self._clock()
        down = set()
        for peer in self.discovery.members():
            if peer == self.discovery.node_id or self.discovery.is_alive(peer):
                self._down_since.pop(peer, None)
                continue
            since = self._down_since.setdefault(peer, now)
            if now - since >= self.settings.hint_after:
                down.add(peer)
        return down

    async def _hint_round(self) -> None:
        """Studies with a long-unreachable owner get a copy on its stand-in, whether the
        owner was still owed them or died holding them: else they stay a replica short.

        One node sends each: a live owner from what it holds (checked on anti-entropy's
        rhythm), or, with every owner down, each node holding or owing copies.
        """
        down = self._long_down()
        if not down:
            self._scanned_for, self._duties = frozenset(), {}
            return
        index, me = self.archive.index, self.discovery.node_id
        members = self.discovery.members()
        candidates = [(r["study_uid"], r["sop_uid"], r["sha256"])
                      for r in await index.owed_to(sorted(down))]
        now = self._clock()
        if down != self._scanned_for or now >= self._next_holdings_scan:
            self._scanned_for = frozenset(down)
            self._next_holdings_scan = now + ANTI_ENTROPY_INTERVAL
            candidates += await index.holdings()
        if self._duties_for != (frozenset(members), frozenset(down)):
            self._duties, self._duties_for = {}, (frozenset(members), frozenset(down))
        duties = self._duties
        hints: dict[str, list[tuple[str, str, str, str]]] = {}
        for study, sop, sha in candidates:
            if study not in duties:
                duties[study] = stand_ins_to_fill(study, members, me, self.settings.replicas,
                                                  down)
            for stand_in in duties[study]:
                hints.setdefault(stand_in, []).append((sop, stand_in, study, sha))
        # The owner's rows stay until it returns: a stand-in that has its hinted copy
        # (delivered lately, or in its change feed) must not be sent it every round.
        fresh = []
        for stand_in, rows in hints.items():
            held = await index.catalog_holds(stand_in, [r[0] for r in rows])
            fresh += [r for r in rows if held.get(r[0]) != r[3]
                      and (r[0], stand_in) not in self._delivered_at]
        added = await index.add_to_outbox(fresh) if fresh else 0
        if added:
            log.info("%d hinted copies queued for stand-ins of unreachable owners", added)

    def _breaker(self, node_id: str) -> CircuitBreaker:
        return self._breakers[node_id]

    async def _send_due(self) -> None:
        due = await self.archive.index.due(self._clock(), 200)
        slots = asyncio.Semaphore(PARALLEL_SENDS)
        tasks = []
        for row in due:
            key = (row["sop_uid"], row["target"])
            if key in self._sending or not self.discovery.is_alive(row["target"]):
                continue
            if not self._breaker(row["target"]).allow():
                continue
            self._sending.add(key)
            tasks.append(asyncio.create_task(self._send(row, slots)))
        if tasks:
            await asyncio.gather(*tasks)

    async def _send(self, row: dict[str, Any], slots: asyncio.Semaphore) -> None:
        sop_uid, target = row["sop_uid"], row["target"]
        try:
            async with slots:
                await self._transfer(row)
        except (ProbeFailed, OSError, ValueError) as exc:
            if isinstance(exc, Refused) and exc.status in FINAL_REFUSALS:
                # 409: the owner holds other bytes under this UID and keeps its first copy,
                # as C-STORE does. 410: the owner holds a tombstone for the study, which
                # reaches us by gossip too. Nothing to retry; both sides log it.
                log.warning("owner %s refused a copy for good: %s", target[:15],
                            FINAL_REFUSALS[exc.status])
                await self.archive.index.delivered(sop_uid, target)
                return
            if isinstance(exc, Refused) and exc.status == NOT_STORABLE:
                # The owner refuses these bytes as truncated or with invalid UIDs (an
                # object stored before ingest checked them): no retry will change that,
                # and it is not delivered either. The row stays, parked, with the reason.
                log.warning("owner %s refuses a copy as not storable; parked: %s",
                            target[:15], exc)
                await self.archive.index.postpone(sop_uid, target, math.inf, str(exc))
                return
            if isinstance(exc, TamperedObject):
                # Our copy is damaged, not the peer: set it aside (anti-entropy brings a
                # good one back) and let the row wait, without counting it against the peer.
                log.error("copy of %s not sent: %s", exc.sha256[:12], exc)
                await self.archive.set_aside(exc.sha256, str(exc))
            else:
                self._breaker(target).failed()
            wait = outbox_wait(int(row["attempts"]))
            await self.archive.index.postpone(sop_uid, target, self._clock() + wait, str(exc))
            log.info("copy to %s failed (retry in %.1f s): %s", target[:15], wait, exc)
        else:
            self._breaker(target).succeeded()
            await self.archive.index.delivered(sop_uid, target)
            self._record_delivery(sop_uid, target)
        finally:
            self._sending.discard((sop_uid, target))

    def _record_delivery(self, sop_uid: str, target: str) -> None:
        now = self._clock()
        self._delivered_at[(sop_uid, target)] = now
        self._backlogs.setdefault(target, Backlog()).record_delivery()
        if len(self._delivered_at) > 10_000:
            self._delivered_at = {k: t for k, t in self._delivered_at.items()
                                  if now - t < DELIVERY_MEMORY}

    def _rate(self, target: str) -> RateWindow:
        return self._rates[target]

    async def _transfer(self, row: dict[str, Any]) -> None:
        sha = row["sha256"]
        syntax = await self.archive.index.transfer_syntax(row["sop_uid"]) or ""
        async for attempt in quick_retries():
            with attempt:
                # A retry resumes: large objects ask the receiver how much it holds.
                await send_object(partial(self.discovery.ask_member, row["target"]),
                                  partial(self.archive.storage.open_object, sha),
                                  sha, syntax, self._rate(row["target"]).add)

    async def _observe_backlogs(self) -> None:
        if not any(b.delivered for b in self._backlogs.values()):
            return  # nothing to reset: spare the outbox scan
        owed = await self.archive.index.outbox_by_target()
        for peer, backlog in self._backlogs.items():
            backlog.observe(owed.get(peer, (0, 0))[0])

    async def peers_status(self) -> list[dict[str, Any]]:
        """Per member: liveness, breaker, copies owed, send rate, catch-up progress."""
        owed = await self.archive.index.outbox_by_target()
        out = []
        for peer in self.discovery.members():
            if peer == self.discovery.node_id:
                continue
            known = self.discovery.table.peers.get(peer)
            depth, waiting = owed.get(peer, (0, 0))
            rate = self._rate(peer).rate()
            backlog = self._backlogs.get(peer, Backlog())
            out.append({
                "node_id": peer,
                "aet": known.aet if known is not None else "",
                "state": known.state.value if known is not None else "unknown",
                "breaker": self._breaker(peer).state.value,
                "outbox_depth": depth,
                "outbox_bytes": waiting,
                "bytes_per_second": round(rate),
                "catch_up": catch_up(backlog.delivered, depth, waiting, rate).as_json(),
            })
        return out

