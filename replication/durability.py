"""What this node still owes before the studies it received are safe: the truthful count.

A study this node received (from a modality, an upload or an import; a copy that came
from a member is that member's to place) is replicated once every one of its R owners
other than this node has acknowledged a durable write (fsync and index commit on its
side) of every instance. Until then it is owed, in one of four states counted here:

- pending: stored and committed here, not yet turned into outbox rows (the replicator
  reads the change feed from a checkpoint, so this lasts up to a loop round or more);
- queued: an outbox row, from enqueue through every try and while in flight, until the
  owner's acknowledgement deletes it; hinted copies for stand-ins are rows too, and the
  owner's own row stays until the owner acknowledges, so a stand-in copy never makes a
  study count as replicated;
- short: the mesh has fewer than R members, or this node is in none, so R copies
  cannot exist whatever is sent;
- unconfirmed: after the set of members changed (a join or a revocation moves owners),
  until a full check finds every owner holding its copies (the
  catalog, or an acknowledgement the catalog has not caught up with), or the copy
  queued. The outbox was filled for the members of its time; anti-entropy queues what
  new owners lack, and this counts it meanwhile. Once clean, the first three states
  cover every later store, so the full scan stops until the members change again.

Pending and queued are read in one SQL statement, so an enqueue committing meanwhile
is seen either as rows or as pending changes: no instant reads as zero. The full check
is read before them, so a copy queued or delivered in between is counted once or (being
acknowledged) not at all. The tally is pure code; ``Durability.owed`` is the I/O edge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.index import Index
from replication.outbox_store import OutboxStore
from replication.placement import owners

# Instances whose source starts with this came from a member (replication, hinted
# copies, the retrieve cache): the sender is the one that must place them.
FOREIGN_PREFIX = "mesh:"
CHECKPOINT = ("replication", "local_seq")  # replication.service.STATE
PLACED_REUSE = 1.0  # seconds
PLACED_PAGE = 2000
CLEAN_KEY = "durable_for"  # the members a full check last came out clean for


class Membership(Protocol):
    """What the tally needs of discovery."""

    node_id: str

    @property
    def is_member(self) -> bool: ...

    def members(self) -> list[str]: ...


@dataclass(frozen=True)
class Owed:
    studies: frozenset[str] = frozenset()
    instances: int = 0


@dataclass(frozen=True)
class Debt:
    copies: int = 0  # copies still to send: queued rows and pending changes' rows
    studies: frozenset[str] = frozenset()  # received here, not yet on R owners
    short: frozenset[str] = frozenset()  # cannot reach R copies: too few members
    by_target: dict[str, Owed] = field(default_factory=dict)
    unconfirmed: int = 0  # copies an owner is not known to hold, not yet queued

    @property
    def replicated(self) -> bool:
        return not self.studies

    def as_json(self, aet_of: dict[str, str]) -> dict[str, Any]:
        return {
            "owed": [
                {"node_id": node_id, "aet": aet_of.get(node_id, ""),
                 "studies": len(o.studies), "instances": o.instances}
                for node_id, o in sorted(self.by_target.items())
            ],
            "short_of_members": len(self.short),
            "unconfirmed": self.unconfirmed,
        }


def tally(
    rows: Iterable[dict[str, Any]], members: Sequence[str], me: str, replicas: int,
    in_mesh: bool, placed: Iterable[dict[str, Any]] = (),
    acknowledged: Callable[[str, str], bool] = lambda sop, target: False,
) -> Debt:
    """The debt that ``Index.replication_debt`` rows describe, placed over ``members``;
    with ``placed`` (``Index.received_placement`` rows), also every owner not known to
    hold a copy (catalog, ``acknowledged``) nor queued one."""
    copies, unconfirmed, studies, short = 0, 0, set(), set()
    targets: dict[str, tuple[set[str], int]] = {}

    def owe(target: str, study: str, n: int) -> None:
        held = targets.setdefault(target, (set(), 0))
        held[0].add(study)
        targets[target] = (held[0], held[1] + n)

    too_few = not in_mesh or len(set(members)) < replicas
    for row in rows:
        study, n = str(row["study_uid"]), int(row["n"])
        if row["kind"] == "queued":
            owe(str(row["target"]), study, n)
            copies += n
            studies.add(study)
        elif row["kind"] == "pending":
            # The same placement the enqueue will make; outside a mesh it makes none.
            for target in owners(study, members, replicas) if in_mesh else []:
                if target != me:
                    owe(target, study, n)
                    copies += n
                    studies.add(study)
        elif row["kind"] == "received" and too_few:
            short.add(study)
    placements: dict[str, list[str]] = {}  # a study's instances share its owners
    for row in placed if in_mesh else ():
        study, sop = str(row["study_uid"]), str(row["sop_uid"])
        known = {*_ids(row["held_by"]), *_ids(row["queued_to"]), me}
        if study not in placements:
            placements[study] = owners(study, members, replicas)
        for target in placements[study]:
            if target not in known and not acknowledged(sop, target):
                owe(target, study, 1)
                unconfirmed += 1
                studies.add(study)
    return Debt(copies, frozenset(studies | short), frozenset(short),
                {t: Owed(frozenset(s), n) for t, (s, n) in targets.items()}, unconfirmed)


def _ids(joined: str | None) -> list[str]:
    return joined.split(",") if joined else []


class Durability:
    """The debt of this node, read from its index; remembers the members for which a
    full check last came out clean, so the cheap count suffices until they change."""

    def __init__(
        self, index: Index, membership: Membership, replicas: Callable[[], int],
        acknowledged: Callable[[str, str], bool] = lambda sop, target: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = index
        self._outbox = OutboxStore(index.db)
        self.membership = membership
        self.replicas = replicas
        # A delivery the catalog has not heard of yet (the replicator remembers it).
        self.acknowledged = acknowledged
        self._clock = clock
        # Persisted: the outbox and checkpoint survive a restart, so a check that came
        # out clean for these members stays true until they change.
        self._clean_for: frozenset[str] | None = None
        self._loaded = False
        # The full check's rows, reused briefly: a roster change invalidates them, and
        # staleness only over-counts (copies it lists as missing since arrived).
        self._placed: tuple[frozenset[str], float, list[dict[str, Any]]] | None = None

    async def owed(self, study_uid: str | None = None) -> Debt:
        members, replicas = self.membership.members(), self.replicas()
        in_mesh = self.membership.is_member
        now_members = frozenset(members)
        if not self._loaded:
            state = await self.index.load_state(CHECKPOINT[0])
            if isinstance(state.get(CLEAN_KEY), list):
                self._clean_for = frozenset(str(m) for m in state[CLEAN_KEY])
            self._loaded = True
        check = in_mesh and len(now_members) >= replicas and now_members != self._clean_for
        placed: list[dict[str, Any]] = []
        if check and study_uid is not None:
            placed = await self._outbox.received_placement(CHECKPOINT, FOREIGN_PREFIX, study_uid)
        elif check:
            placed = await self._placed_rows(now_members)
        rows = await self._outbox.replication_debt(
            CHECKPOINT, FOREIGN_PREFIX, study_uid,
            with_received=not in_mesh or len(now_members) < replicas,
        )
        debt = tally(rows, members, self.membership.node_id, replicas, in_mesh, placed,
                     self.acknowledged)
        if check and study_uid is None and debt.unconfirmed == 0:
            await self.index.save_state(CHECKPOINT[0], CLEAN_KEY, sorted(now_members))
            self._clean_for = now_members
        return debt

    async def _placed_rows(self, members: frozenset[str]) -> list[dict[str, Any]]:
        now = self._clock()
        if self._placed is None or self._placed[0] != members \
                or now - self._placed[1] > PLACED_REUSE:
            rows: list[dict[str, Any]] = []
            while True:
                after = int(rows[-1]["seq"]) if rows else 0
                page = await self._outbox.received_placement(
                    CHECKPOINT, FOREIGN_PREFIX, after_seq=after, limit=PLACED_PAGE)
                rows += page
                if len(page) < PLACED_PAGE:
                    break
            self._placed = (members, now, rows)
        return self._placed[2]
