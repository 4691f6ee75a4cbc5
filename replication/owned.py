"""What this node holds, in memory, kept current from the index in proportion to what
changed: anti-entropy's digests and instance lists, and the stand-in scans, read it
instead of every instance row each round.

Each :meth:`OwnedIndex.refresh` reads the instance rows added since the last one
(``instances.seq``, the change feed's sequence, is unique and indexed: a round with
nothing new costs one empty range read). Rows are removed in few places (a deletion, a
cache eviction, a quarantine, reconciliation); each bumps ``Database.removals`` once
committed, and the next refresh then reads everything again: a copy this node no longer
holds is never claimed in a digest, so a peer never counts on it. A full read also runs
every :data:`FULL_PASS_INTERVAL` whatever happened, against drift nobody foresaw (a row
changed outside PACSmesh): rare enough that its cost per round is small, frequent enough
that anything missed is repaired within minutes.

Per owner (and set of members, and replica count), the instances it should hold too are
kept by digest bucket; an added instance updates only its study's bucket, whose digest
is recomputed when next asked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from node.index import Index
from replication.digest import Held, bucket_digests, bucket_of
from replication.placement import owners

FULL_PASS_INTERVAL = 600.0
# Instances remembered as added for the stand-in scan; past this many unread, they are
# forgotten and that scan reads everything instead (memory stays bounded when no owner
# is down and nobody reads them).
MAX_ADDED = 100_000
ViewKey = tuple[str, tuple[str, ...], int]  # owner, members, replicas


@dataclass
class _View:
    """What this node holds that one owner should hold too, by bucket."""

    buckets: dict[int, dict[str, Held]] = field(default_factory=dict)
    digests: dict[int, str] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)

    def add(self, held: Held) -> None:
        bucket = bucket_of(held.study_uid)
        self.buckets.setdefault(bucket, {})[held.sop_uid] = held
        self.dirty.add(bucket)

    def all_digests(self) -> dict[int, str]:
        for bucket in self.dirty:
            self.digests.update(bucket_digests(self.buckets.get(bucket, {}).values()))
        self.dirty.clear()
        return self.digests


class OwnedIndex:
    def __init__(self, index: Index, clock: Callable[[], float] = time.monotonic,
                 full_every: float = FULL_PASS_INTERVAL) -> None:
        self._index = index
        self._clock = clock
        self._full_every = full_every
        self._by_study: dict[str, dict[str, str]] = {}  # study -> sop -> sha256
        self._seq = 0  # the highest instances.seq read
        self._removals = -1  # Database.removals when everything was last read
        self._next_full = 0.0
        self._views: dict[ViewKey, _View] = {}
        self._lock = asyncio.Lock()
        # Bumped by every full read: a scan keyed on it starts again from the top.
        self.generation = 0
        # Held added since the last full read and not yet read, in order (the first is
        # number ``_added_base``): what the incremental stand-in scan reads.
        self._added: list[Held] = []
        self._added_base = 0

    async def refresh(self) -> None:
        async with self._lock:
            db = self._index.db
            removals = db.removals  # read before the rows: a later removal is seen next
            if removals != self._removals or self._clock() >= self._next_full:
                rows = await self._index.holdings_since(0)
                self._by_study, self._views, self._added = {}, {}, []
                self._added_base = 0
                self._removals, self._next_full = removals, self._clock() + self._full_every
                self.generation += 1
                self._seq = 0
                self._take(rows, incremental=False)
                return
            # Under the writers' lock: never inside another writer's open transaction.
            async with db.write():
                rows = await self._index.holdings_since(self._seq)
            self._take(rows, incremental=True)

    def _take(self, rows: Iterable[tuple[str, str, str, int]], incremental: bool) -> None:
        for study, sop, sha, seq in rows:
            self._seq = max(self._seq, seq)
            self._by_study.setdefault(study, {})[sop] = sha
            if not incremental:
                continue
            held = Held(study, sop, sha)
            if len(self._added) >= MAX_ADDED:
                # Forgotten: the next stand-in scan is told to read everything.
                self._added, self._added_base = [], 0
                self.generation += 1
            self._added.append(held)
            for (owner, members, replicas), view in self._views.items():
                if owner in owners(study, list(members), replicas):
                    view.add(held)

    def _view(self, owner: str, members: list[str], replicas: int) -> _View:
        key = (owner, tuple(members), replicas)
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = _View()
            for study, sops in self._by_study.items():
                if owner in owners(study, members, replicas):
                    for sop, sha in sops.items():
                        view.add(Held(study, sop, sha))
            # Views of members no longer in the mesh are not kept for ever.
            for stale in [k for k in self._views if k[1] != key[1]]:
                del self._views[stale]
        return view

    async def digests(self, owner: str, members: list[str], replicas: int) -> dict[int, str]:
        """Bucket digests of what this node holds that ``owner`` should hold too."""
        await self.refresh()
        return dict(self._view(owner, members, replicas).all_digests())

    async def bucket(self, owner: str, members: list[str], replicas: int,
                     bucket: int) -> list[Held]:
        await self.refresh()
        return list(self._view(owner, members, replicas).buckets.get(bucket, {}).values())

    async def everything(self) -> list[Held]:
        """Every instance held here (a full scan's candidates)."""
        await self.refresh()
        return [Held(study, sop, sha) for study, sops in self._by_study.items()
                for sop, sha in sops.items()]

    async def added_since(self, mark: tuple[int, int]) -> tuple[list[Held] | None,
                                                                 tuple[int, int]]:
        """What was added since ``mark`` (from an earlier call), and the new mark; None
        instead of a list when everything was read again since (scan it all)."""
        await self.refresh()
        generation, position = mark
        now = (self.generation, self._added_base + len(self._added))
        if generation != self.generation or position < self._added_base:
            return None, now
        new = self._added[position - self._added_base:]
        # One reader (the stand-in scan): what it has read need not be kept. The caller
        # that fails to queue them asks again from its old mark, and scans everything.
        del self._added[:position - self._added_base]
        self._added_base = position
        return new, now
