"""What the replicator decides, as pure code: no sockets, no SQLite, the clock passed in.

- which outbox rows a change feed page creates (one per owner other than this node),
- which hinted copies a stand-in gets while an owner stays unreachable,
- who sends a copy that an owner lacks, when several members hold it,
- which queued rows are due and may start now.

``replication.service`` reads the index and the peers' state, asks here, and acts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any

from replication.placement import owners, rendezvous_order, stand_ins_to_fill

# A holder that is not the chosen sender of a missing copy waits this long for the chosen
# one (which may be down, or may have lost its copy) before it sends the copy itself.
REPAIR_PATIENCE = 60.0


@dataclass(frozen=True)
class Copy:
    """One instance owed to one member: an outbox row."""

    sop_uid: str
    target: str
    study_uid: str
    sha256: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.sop_uid, self.target)

    def as_row(self) -> tuple[str, str, str, str]:
        """The (sop_uid, target, study_uid, sha256) tuple the index queues."""
        return (self.sop_uid, self.target, self.study_uid, self.sha256)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Copy:
        return cls(str(row["sop_uid"]), str(row["target"]), str(row["study_uid"]),
                   str(row["sha256"]))


@dataclass(frozen=True)
class Change:
    """One entry of this node's change feed, as far as replication cares."""

    kind: str
    sop_uid: str
    study_uid: str
    sha256: str
    source_aet: str

    @classmethod
    def from_feed(cls, row: Mapping[str, Any]) -> Change:
        return cls(str(row["kind"]), str(row["sop_uid"]), str(row["study_uid"]),
                   str(row["sha256"] or ""), str(row["source_aet"] or ""))


@dataclass(frozen=True)
class Held:
    """An instance this node holds."""

    study_uid: str
    sop_uid: str
    sha256: str


def copies_for_changes(
    changes: Iterable[Change], members: Iterable[str], me: str, replicas: int
) -> list[Copy]:
    """One row per owner other than this node, for each instance received from outside
    the mesh. Copies received from a member are not forwarded: their sender owns that."""
    members = list(members)
    rows = []
    for change in changes:
        if change.kind != "add" or not change.sha256 or change.source_aet.startswith("mesh:"):
            continue
        rows += [Copy(change.sop_uid, target, change.study_uid, change.sha256)
                 for target in owners(change.study_uid, members, replicas) if target != me]
    return rows


class StandInDuties:
    """Each study's stand-ins this node must fill, cached for one (members, long-down)
    pair: placement hashes every member per study, and the holdings scan repeats."""

    def __init__(self, me: str, replicas: int) -> None:
        self.me, self.replicas = me, replicas
        self._for: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self._duties: dict[str, list[str]] = {}

    def of(self, study_uid: str, members: Iterable[str], down: Set[str]) -> list[str]:
        key = (frozenset(members), frozenset(down))
        if key != self._for:
            self._for, self._duties = key, {}
        if study_uid not in self._duties:
            self._duties[study_uid] = stand_ins_to_fill(study_uid, key[0], self.me,
                                                        self.replicas, key[1])
        return self._duties[study_uid]


def hinted_copies(
    candidates: Iterable[Held], duties: Callable[[str], list[str]]
) -> list[Copy]:
    """A hinted copy of each candidate for each stand-in this node must fill for its
    study (``duties``); one row per (instance, stand-in) even if it is a candidate twice
    (owed to the unreachable owner and held here)."""
    rows: dict[tuple[str, str], Copy] = {}
    for held in candidates:
        for stand_in in duties(held.study_uid):
            rows.setdefault((held.sop_uid, stand_in),
                            Copy(held.sop_uid, stand_in, held.study_uid, held.sha256))
    return list(rows.values())


def not_yet_held(
    copies: Iterable[Copy], held: Mapping[str, Mapping[str, str]], delivered: Set[tuple[str, str]]
) -> list[Copy]:
    """Copies the target neither holds (``held``: target -> sop_uid -> sha256, from its
    change feed) nor was lately delivered by this node."""
    return [c for c in copies
            if held.get(c.target, {}).get(c.sop_uid) != c.sha256 and c.key not in delivered]


def upstream_of(source_aet: str, members: Iterable[str]) -> str | None:
    """The member an instance came from (``mesh:<node id>``, as ingest records it), ""
    when it came from outside the mesh (this node is where its copies start), or None
    when it came from a node that is no member now."""
    if not source_aet.startswith("mesh:"):
        return ""
    prefix = source_aet[len("mesh:"):]
    return next((m for m in members if prefix and m.startswith(prefix)), None)


def repair_sender(
    study_uid: str, target: str, holders: Set[str], members: Iterable[str], alive: Set[str],
    me: str, upstream: str | None = None,
) -> str | None:
    """The member that sends ``target`` a copy it lacks, as this node sees it.

    Copies are traced back the way they came: the node that took the instance in from
    outside sends it (its outbox may owe the copy already); a node that got its copy from
    a reachable member leaves the job to that member. Otherwise (``upstream`` None: not
    known, or gone) the first holder in the study's rendezvous order that is reachable
    (this node counts as reachable) sends; holders that know the same agree on it.
    """
    if upstream == "":
        return me
    if upstream is not None and upstream != target and upstream in alive:
        return upstream
    for node in rendezvous_order(study_uid, members):
        if node != target and node in holders and (node == me or node in alive):
            return node
    return None


class RepairSenders:
    """Which of the copies anti-entropy found missing at a peer this node sends.

    Several members may hold what a peer lacks (a member that joined, or came back, owns
    studies that others hold, and the node that stored them may still owe them in its
    outbox); if each sent, the peer would receive each copy several times. Only the
    chosen sender (``repair_sender``) queues a copy at once; another holder queues it
    only when it is still missing ``patience`` seconds after it first saw it missing, so
    a chosen sender that is gone or lost its copy cannot leave it missing for good.
    """

    def __init__(self, clock: Callable[[], float], patience: float = REPAIR_PATIENCE) -> None:
        self._clock = clock
        self.patience = patience
        self._missing_since: dict[tuple[str, str], float] = {}

    def plan(
        self, peer: str, missing: Iterable[Copy], holders: Mapping[str, Set[str]],
        members: Iterable[str], alive: Set[str], me: str,
        upstream: Mapping[str, str | None] | None = None,
    ) -> list[Copy]:
        """``missing``: every copy ``peer`` lacks that we hold (one comparison with it);
        ``holders``: sop_uid -> other members known to hold those bytes; ``upstream``:
        sop_uid -> where our copy came from (``upstream_of``; absent: not known)."""
        now, members, upstream = self._clock(), list(members), upstream or {}
        send, seen = [], set()
        for copy in missing:
            seen.add(copy.key)
            since = self._missing_since.setdefault(copy.key, now)
            sender = repair_sender(copy.study_uid, peer, set(holders.get(copy.sop_uid, ()))
                                   | {me}, members, alive, me, upstream.get(copy.sop_uid))
            if sender == me or now - since >= self.patience:
                send.append(copy)
        # What the peer no longer lacks is forgotten: it starts afresh if lost again.
        for key in [k for k in self._missing_since if k[1] == peer and k not in seen]:
            del self._missing_since[key]
        return send


@dataclass(frozen=True)
class Queued:
    """An outbox row as the send scheduler sees it."""

    copy: Copy
    next_try: float
    attempts: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Queued:
        return cls(Copy.from_row(row), float(row["next_try"]), int(row["attempts"]))


def startable(
    rows: Iterable[Queued], now: float, alive: Set[str], sending: Set[tuple[str, str]],
    allowed: Callable[[str], bool], busy: Mapping[str, int], per_target: int,
) -> list[Queued]:
    """Rows to start now: due, to a reachable member whose breaker lets a copy through,
    not already on its way, and within the target's free send slots. Each target has its
    own slots, so copies to a member whose link hangs never wait behind it elsewhere."""
    started: dict[str, int] = dict(busy)
    out = []
    for row in rows:
        target = row.copy.target
        if row.next_try > now or row.copy.key in sending or target not in alive:
            continue
        if started.get(target, 0) >= per_target or not allowed(target):
            continue
        started[target] = started.get(target, 0) + 1
        out.append(row)
    return out


class DownSince:
    """When each member was first seen unreachable, to know who is down long enough to
    get stand-ins."""

    def __init__(self, clock: Callable[[], float], hint_after: float) -> None:
        self._clock, self.hint_after = clock, hint_after
        self._since: dict[str, float] = {}

    def long_down(self, members: Iterable[str], alive: Set[str], me: str) -> set[str]:
        now, down = self._clock(), set()
        for peer in members:
            if peer == me or peer in alive:
                self._since.pop(peer, None)
                continue
            if now - self._since.setdefault(peer, now) >= self.hint_after:
                down.add(peer)
        return down


class PeerSchedule:
    """One kind of per-peer work (catalog pulls, tombstone pulls, anti-entropy): whose
    turn has come. A member that is down loses its turn, so it goes first when back."""

    def __init__(self, clock: Callable[[], float], interval: float) -> None:
        self._clock, self.interval = clock, interval
        self._next: dict[str, float] = {}

    def due(self, members: Iterable[str], alive: Set[str], me: str,
            running: Set[str] = frozenset()) -> list[str]:
        now, due = self._clock(), []
        for peer in members:
            if peer == me:
                continue
            if peer not in alive:
                self._next.pop(peer, None)
                continue
            if peer not in running and now >= self._next.get(peer, 0.0):
                self._next[peer] = now + self.interval
                due.append(peer)
        return due

    def again(self, peer: str) -> None:
        """Give ``peer`` its turn again at once (its work could not be done yet)."""
        self._next.pop(peer, None)
