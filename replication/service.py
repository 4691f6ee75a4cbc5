"""Replication as a running service: every study on its R owners, through the outbox.

1. The local change feed is read from a persisted checkpoint; each instance this node
   received from outside the mesh gets one outbox row per owner (rendezvous placement
   over the roster), in the same transaction that moves the checkpoint.
2. Workers send due rows; a success deletes the row, a failure postpones it with
   tenacity's jittered exponential wait (replication/retry.py), and a peer that keeps
   failing is circuit-broken. Connection drops within one send are retried at once.
Instances received from the mesh are not forwarded again: their sender owns that job.

Each kind of work runs as its own task (one asyncio TaskGroup): local bookkeeping, the
send dispatcher, and per-peer catalog pulls, tombstone pulls and anti-entropy, each peer
on its own schedule and under its own time-out. A link that hangs (a WAN cut: no reset,
just silence) holds up only the work for the peers behind it. What to do is decided in
``replication.planner`` (pure); this module does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from discovery.probe import ProbeFailed, Refused
from discovery.service import Discovery
from node.archive import Archive
from node.patients.store import PatientStore
from node.storage import TamperedObject
from node.tasks import cancel_and_wait
from node.worklist.store import WorklistStore
from replication.antientropy import missing_at
from replication.breaker import CircuitBreaker
from replication.catalog_store import CatalogStore
from replication.deletion import Deletions
from replication.errors import RemoteAnswerInvalid
from replication.order_sync import OrderEventSync
from replication.outbox_store import NOTHING_OWED, OutboxStore
from replication.outgoing import send_object
from replication.owned import OwnedIndex
from replication.patient_sync import PatientEventSync
from replication.placement import DEFAULT_REPLICAS
from replication.planner import (
    Change,
    Copy,
    DownSince,
    Held,
    PeerSchedule,
    Queued,
    RepairSenders,
    StandInDuties,
    copies_for_changes,
    hinted_copies,
    not_yet_held,
    startable,
    upstream_of,
)
from replication.progress import Backlog, RateWindow, catch_up
from replication.retry import outbox_wait, quick_retries
from replication.wire import CHANGES_PATH, ChangePage

log = logging.getLogger(__name__)
STATE = ("replication", "local_seq")
FEED_PAGE = 500  # changes turned into rows at a time
LOOP_INTERVAL = 0.5
ANTI_ENTROPY_INTERVAL = 10.0
CATALOG_INTERVAL = 1.0
TOMBSTONE_INTERVAL = 2.0
PARALLEL_SENDS = 4  # per target
# Bounds on one peer's work of each kind: past them it is abandoned until its next turn.
CATALOG_SECONDS = 30.0
TOMBSTONE_SECONDS = 30.0
REPAIR_SECONDS = 60.0
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
        clock: Callable[[], float] = time.time, owned: OwnedIndex | None = None,
        patients: PatientStore | None = None, orders: WorklistStore | None = None,
    ) -> None:
        self.archive = archive
        # What this node holds, shared with the anti-entropy routes (replication/owned.py).
        self.owned = owned or OwnedIndex(archive.index)
        self.discovery = discovery
        self.settings = settings
        self._outbox = OutboxStore(archive.index.db)
        self._known = CatalogStore(archive.index.db)  # the mesh catalog: who holds what
        self._clock = clock
        self._breakers: defaultdict[str, CircuitBreaker] = defaultdict(
            lambda: CircuitBreaker(self._clock))
        self._task: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._sending: set[tuple[str, str]] = set()
        self._busy: Counter[str] = Counter()  # sends under way, per target
        self._running: defaultdict[str, set[str]] = defaultdict(set)  # kind -> peers
        self._repair = PeerSchedule(clock, ANTI_ENTROPY_INTERVAL)
        self._catalog = PeerSchedule(clock, CATALOG_INTERVAL)
        self._tombstones = PeerSchedule(clock, TOMBSTONE_INTERVAL)
        # Peers whose tombstones were read since they were last seen alive (see _repair).
        self._tombstones_read: set[str] = set()
        self._repair_senders = RepairSenders(clock)
        self._down = DownSince(clock, settings.hint_after)
        # Holdings are scanned whole for stand-in duties when the members or the set of
        # long-down owners change (or the holdings were read again); otherwise each round
        # reads only what was added since the last one.
        self._scanned_for: tuple[frozenset[str], tuple[str, ...]] = (frozenset(), ())
        self._scan_mark = (-1, 0)
        self._duties: StandInDuties | None = None
        self.deletions = Deletions(archive, discovery, clock)
        self.patient_events = None if patients is None else PatientEventSync(
            patients, discovery, alive=self._alive)
        self._rates: defaultdict[str, RateWindow] = defaultdict(
            lambda: RateWindow(self._clock))
        self._backlogs: dict[str, Backlog] = {}
        self.order_events = None if orders is None else OrderEventSync(orders, discovery)
        self._delivered_at: dict[tuple[str, str], float] = {}
        # Turning feed changes into rows, and anti-entropy queueing, take turns (see
        # _repair_with): else a copy queued by the one is sent, then queued again.
        self._feed_lock = asyncio.Lock()
        # Set when a send ends or copies are queued: the sends loop looks again at once.
        self._sends_due = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replication")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def _alive(self) -> set[str]:
        return {m for m in self.discovery.members() if self.discovery.is_alive(m)}

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            # Sends start again as soon as one ends or copies are queued, not at the next
            # tick: with PARALLEL_SENDS per target started once a tick, a target got at
            # most 8 copies a second (4 MB/s of CT on loopback).
            for name, work, wake in (("local", self._local_round, None),
                                     ("sends", self._dispatch_sends, self._sends_due),
                                     ("peers", self._dispatch_peers, None)):
                group.create_task(self._forever(name, work, wake), name=f"replication-{name}")

    async def _forever(self, name: str, work: Callable[[], Awaitable[None]],
                       wake: asyncio.Event | None) -> None:
        """Run ``work`` every LOOP_INTERVAL, or sooner when ``wake`` is set."""
        while True:
            try:
                if self.discovery.is_member:
                    await work()
            except Exception as exc:  # one bad round must not end replication
                log.exception("replication %s round failed: %s", name, exc)
            if wake is None:
                await asyncio.sleep(LOOP_INTERVAL)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), LOOP_INTERVAL)
            wake.clear()

    async def _local_round(self) -> None:
        # Deletions first: nothing below may queue a study deleted meanwhile.
        await self.deletions.pick_up()
        await self._release_former_members()
        await self._enqueue_local_changes()
        await self._hint_round()
        await self._observe_backlogs()

    async def _release_former_members(self) -> None:
        """Drop the rows of members revoked since they were queued. Their copies are not
        lost from the count: a change of members makes ``Durability`` count every study
        as unconfirmed until a full check finds each of today's owners holding it, and
        anti-entropy queues what those owners lack."""
        members = self.discovery.members()
        if self.discovery.node_id not in members:
            return  # not (or no longer) a member: keep everything as it was
        dropped = await self._outbox.drop_rows_not_to(members)
        if dropped:
            log.info("%d copies owed to former members dropped; today's owners get theirs"
                     " through anti-entropy", dropped)

    async def _dispatch_peers(self) -> None:
        """Start each peer's due work of each kind, unless that peer's is still running."""
        members, alive, me = self.discovery.members(), self._alive(), self.discovery.node_id
        # A peer seen down must give its tombstones again before anti-entropy with it.
        self._tombstones_read &= alive
        if self.patient_events is not None:
            # And its patient events before queries are answered (replication.patient_sync).
            self.patient_events.track(set(members) - {me}, alive)
        for kind, schedule, work, seconds in (
            ("tombstones", self._tombstones, self._pull_tombstones, TOMBSTONE_SECONDS),
            ("catalog", self._catalog, self._pull_catalog, CATALOG_SECONDS),
            ("anti-entropy", self._repair, self._repair_with, REPAIR_SECONDS),
        ):
            running = self._running[kind]
            for peer in schedule.due(members, alive, me, running):
                running.add(peer)
                self._spawn(self._peer_work(kind, peer, work, seconds))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        self._group.create_task(work)

    async def _peer_work(
        self, kind: str, peer: str, work: Callable[[str], Awaitable[None]], seconds: float
    ) -> None:
        try:
            async with asyncio.timeout(seconds):
                await work(peer)
        except TimeoutError:
            log.info("%s with %s timed out after %.0f s", kind, peer[:15], seconds)
        except Exception as exc:  # one peer's failure must not end the others' work
            log.exception("%s with %s failed: %s", kind, peer[:15], exc)
        finally:
            self._running[kind].discard(peer)

    async def _enqueue_local_changes(self) -> bool:
        """Turn one page of this node's change feed into outbox rows; True when more
        changes wait."""
        async with self._feed_lock:
            return await self._enqueue_page()

    async def _enqueue_page(self) -> bool:
        index = self.archive.index
        state = await index.load_state(STATE[0])
        checkpoint = int(state.get(STATE[1], 0))
        changes = await index.changes_since(checkpoint, FEED_PAGE)
        if not changes:
            return False
        copies = copies_for_changes((Change.from_feed(c) for c in changes),
                                    self.discovery.members(), self.discovery.node_id,
                                    self.settings.replicas)
        # A copy anti-entropy queued and this node delivered before its change was read
        # here is not queued again: the owner has it.
        copies = [c for c in copies if c.key not in self._delivered_at]
        await self._outbox.enqueue([c.as_row() for c in copies],
                            (STATE[0], STATE[1], changes[-1]["seq"]))
        if copies:
            log.info("%d copies queued for %d owners", len(copies),
                     len({c.target for c in copies}))
            self._sends_due.set()
        return len(changes) == FEED_PAGE

    async def _repair_with(self, peer: str) -> None:
        """Anti-entropy with one live member, periodically and as soon as it is back."""
        # A peer's tombstones are asked for before anything is compared with it, each
        # time it comes back: a node returning from an outage otherwise offers deleted
        # studies (refused, but for nothing) before it learns they are deleted.
        if peer not in self._tombstones_read:
            self._repair.again(peer)  # its turn comes again next round
            return
        started = self._clock()
        try:
            rows = await missing_at(self.owned, self.discovery, peer, self.settings.replicas)
        except (ProbeFailed, RemoteAnswerInvalid) as exc:
            log.info("anti-entropy with %s failed: %s", peer[:15], exc)
            return
        # A copy delivered while the peer's lists were being read is not missing:
        # queueing it again would send it twice.
        owed = [Copy(*r) for r in rows]
        missing = [c for c in owed if self._delivered_at.get(c.key, -1.0) < started]
        members = self.discovery.members()
        sources = await self.archive.index.sources([c.sop_uid for c in missing]) \
            if missing else {}
        copies = self._repair_senders.plan(
            peer, missing, await self._holders(missing, peer), members, self._alive(),
            self.discovery.node_id,
            {sop: upstream_of(source, members) for sop, source in sources.items()})
        if not copies:
            return
        async with self._feed_lock:
            # What the peer lacks may be instances just stored here whose change is not
            # yet rows: turned into rows first, those rows are the ones kept (a second
            # row for one copy is ignored), so the change cannot queue it again once sent.
            while await self._enqueue_page():
                pass
            copies = [c for c in copies if self._delivered_at.get(c.key, -1.0) < started]
            added = await self._outbox.add_to_outbox([c.as_row() for c in copies]) \
                if copies else 0
        if added:
            log.info("anti-entropy: %d copies owed to %s queued", added, peer[:15])

    async def _holders(self, copies: list[Copy], peer: str) -> dict[str, set[str]]:
        """sop_uid -> the other members known to hold those bytes: from their change
        feeds (the catalog), and from this node's own deliveries."""
        holders: dict[str, set[str]] = defaultdict(set)
        if not copies:
            return holders
        sha = {c.sop_uid: c.sha256 for c in copies}
        for member in self.discovery.members():
            if member in (peer, self.discovery.node_id):
                continue
            for sop, held in (await self._known.catalog_holds(member, list(sha))).items():
                if held == sha[sop]:
                    holders[sop].add(member)
            for sop in sha:
                if (sop, member) in self._delivered_at:
                    holders[sop].add(member)
        return holders

    async def _pull_tombstones(self, peer: str) -> None:
        """Pull one live member's tombstones; one back from an outage goes first, before
        anti-entropy could offer it (or take from it) a deleted study."""
        try:
            await self.deletions.pull(peer)
            if self.patient_events is not None:
                # Before anti-entropy too: a member back from an outage learns the
                # merges and corrections made meanwhile as soon as it is seen again.
                await self.patient_events.pull(peer)
            if self.order_events is not None:  # the worklist, with the same round
                await self.order_events.pull(peer)
        except (ProbeFailed, RemoteAnswerInvalid) as exc:
            log.info("tombstone or patient event pull from %s failed: %s", peer[:15], exc)
        finally:
            # Asked (as before this ran as its own task): a peer whose tombstones cannot
            # be read must not be kept from anti-entropy for good.
            self._tombstones_read.add(peer)
            if self.patient_events is not None:
                self.patient_events.asked(peer)

    async def _pull_catalog(self, peer: str) -> None:
        """Read one live member's change feed from where we stopped: the catalog."""
        index = self.archive.index
        since = int((await index.load_state("catalog")).get(peer, 0))
        try:
            while True:
                page = ChangePage.from_json(await self.discovery.ask_member(
                    peer, "GET", CHANGES_PATH, params={"since": str(since)}
                ))
                since = page.next
                await self._known.record_catalog_changes(peer, page.rows(), since)
                if not page.more:
                    break
        except (ProbeFailed, RemoteAnswerInvalid) as exc:
            log.info("catalog pull from %s failed: %s", peer[:15], exc)

    async def _hint_round(self) -> None:
        """Studies with a long-unreachable owner get a copy on its stand-in, whether the
        owner was still owed them or died holding them: else they stay a replica short.

        One node sends each: a live owner from what it holds (checked on anti-entropy's
        rhythm), or, with every owner down, each node holding or owing copies.
        """
        members, me = self.discovery.members(), self.discovery.node_id
        down = self._down.long_down(members, self._alive(), me)
        if not down:
            self._scanned_for, self._duties = (frozenset(), ()), None
            return
        candidates = [Held(r.study_uid, r.sop_uid, r.sha256)
                      for r in await self._outbox.owed_to(sorted(down))]
        new, mark = await self.owned.added_since(self._scan_mark)
        scan_for = (frozenset(down), tuple(members))
        if new is None or scan_for != self._scanned_for:
            # Everything: new duties, or the holdings were read whole again (a removal,
            # or the periodic full pass of replication/owned.py, which also re-queues a
            # hinted copy whose row was dropped meanwhile).
            new = await self.owned.everything()
        candidates += [Held(h.study_uid, h.sop_uid, h.sha256) for h in new]
        if self._duties is None:
            self._duties = StandInDuties(me, self.settings.replicas)
        duties = partial(self._duties.of, members=members, down=down)
        hints = hinted_copies(candidates, duties)
        # The owner's rows stay until it returns: a stand-in that has its hinted copy
        # (delivered lately, or in its change feed) must not be sent it every round.
        held = {t: await self._known.catalog_holds(t, [c.sop_uid for c in hints if c.target == t])
                for t in {c.target for c in hints}}
        fresh = not_yet_held(hints, held, self._delivered_at.keys())
        added = await self._outbox.add_to_outbox([c.as_row() for c in fresh]) if fresh else 0
        # Only once queued: a round that failed is scanned again.
        self._scanned_for, self._scan_mark = scan_for, mark
        if added:
            log.info("%d hinted copies queued for stand-ins of unreachable owners", added)

    def _breaker(self, node_id: str) -> CircuitBreaker:
        return self._breakers[node_id]

    async def _dispatch_sends(self) -> None:
        """Start the due copies each reachable target has free slots for. Each target's
        rows are read on their own: a member that cannot take copies (down, or its link
        hanging) never keeps another's rows from being read or sent."""
        now, alive = self._clock(), self._alive()
        for target in sorted(alive):
            if self._busy[target] >= PARALLEL_SENDS:
                continue
            rows = await self._outbox.due_to(target, now, 2 * PARALLEL_SENDS)
            for row in startable(rows, now, alive, self._sending,
                                 lambda t: self._breaker(t).allow(), self._busy,
                                 PARALLEL_SENDS):
                self._sending.add(row.copy.key)
                self._busy[target] += 1
                self._spawn(self._send(row))

    async def _send(self, row: Queued) -> None:
        try:
            await self._send_one(row)
        except Exception as exc:  # a task of the group: its failure would end the others
            log.exception("copy to %s failed: %s", row.copy.target[:15], exc)

    async def _send_one(self, row: Queued) -> None:
        sop_uid, target = row.copy.sop_uid, row.copy.target
        try:
            await self._transfer(row.copy, row.attempts > 0)
        except (ProbeFailed, OSError, RemoteAnswerInvalid) as exc:
            if isinstance(exc, Refused) and exc.status in FINAL_REFUSALS:
                # 409: the owner holds other bytes under this UID and keeps its first copy,
                # as C-STORE does. 410: the owner holds a tombstone for the study, which
                # reaches us by gossip too. Nothing to retry; both sides log it.
                log.warning("owner %s refused a copy for good: %s", target[:15],
                            FINAL_REFUSALS[exc.status])
                await self._outbox.delivered(sop_uid, target)
                return
            if isinstance(exc, Refused) and exc.status == NOT_STORABLE:
                # The owner refuses these bytes as truncated or with invalid UIDs (an
                # object stored before ingest checked them): no retry will change that,
                # and it is not delivered either. The row stays, parked, with the reason.
                log.warning("owner %s refuses a copy as not storable; parked: %s",
                            target[:15], exc)
                await self._outbox.postpone(sop_uid, target, math.inf, str(exc))
                return
            if isinstance(exc, TamperedObject):
                # Our copy is damaged, not the peer: set it aside (anti-entropy brings a
                # good one back) and let the row wait, without counting it against the peer.
                log.error("copy of %s not sent: %s", exc.sha256[:12], exc)
                await self.archive.set_aside(exc.sha256, str(exc))
            else:
                self._breaker(target).failed()
            wait = outbox_wait(row.attempts)
            await self._outbox.postpone(sop_uid, target, self._clock() + wait, str(exc))
            log.info("copy to %s failed (retry in %.1f s): %s", target[:15], wait, exc)
        else:
            self._breaker(target).succeeded()
            await self._outbox.delivered(sop_uid, target)
            self._record_delivery(sop_uid, target)
        finally:
            self._sending.discard((sop_uid, target))
            self._busy[target] -= 1
            self._sends_due.set()

    def _record_delivery(self, sop_uid: str, target: str) -> None:
        now = self._clock()
        self._delivered_at[(sop_uid, target)] = now
        self._backlogs.setdefault(target, Backlog()).record_delivery()
        if len(self._delivered_at) > 10_000:
            self._delivered_at = {k: t for k, t in self._delivered_at.items()
                                  if now - t < DELIVERY_MEMORY}

    def acknowledged(self, sop_uid: str, target: str) -> bool:
        """Whether ``target`` acknowledged this copy lately (catalogs lag behind)."""
        return (sop_uid, target) in self._delivered_at

    def _rate(self, target: str) -> RateWindow:
        return self._rates[target]

    async def _transfer(self, copy: Copy, tried_before: bool) -> None:
        sha = copy.sha256
        syntax = await self.archive.index.transfer_syntax(copy.sop_uid) or ""
        async for attempt in quick_retries():
            with attempt:
                # A retry resumes: large objects ask the receiver how much it holds, and
                # any object tried before asks whether the receiver stored it already
                # (an answer lost with a broken link is no proof it did not).
                await send_object(partial(self.discovery.ask_member, copy.target),
                                  partial(self.archive.storage.open_object, sha),
                                  sha, syntax, self._rate(copy.target).add,
                                  ask_first=tried_before
                                  or attempt.retry_state.attempt_number > 1)

    async def _observe_backlogs(self) -> None:
        if not any(b.delivered for b in self._backlogs.values()):
            return  # nothing to reset: spare the outbox scan
        owed = await self._outbox.outbox_by_target()
        for peer, backlog in self._backlogs.items():
            backlog.observe(owed.get(peer, NOTHING_OWED).copies)

    async def peers_status(self) -> list[dict[str, Any]]:
        """Per member: liveness, breaker, copies owed, send rate, catch-up progress."""
        owed = await self._outbox.outbox_by_target()
        out = []
        for peer in self.discovery.members():
            if peer == self.discovery.node_id:
                continue
            known = self.discovery.table.peers.get(peer)
            debt = owed.get(peer, NOTHING_OWED)
            depth, waiting = debt.copies, debt.bytes
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

