"""Which nodes must hold a study: rendezvous (highest random weight) hashing.

Pure code. Every member ranks the roster's members for a study the same way, so all
agree on the owners without talking; members come from the roster, not from who is
online this minute, so an outage does not reshuffle data. Adding or removing a member
moves only the studies whose owners it gains or loses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

DEFAULT_REPLICAS = 2


def _weight(study_uid: str, node_id: str) -> int:
    digest = hashlib.sha256(f"{study_uid}\x00{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def rendezvous_order(study_uid: str, members: Iterable[str]) -> list[str]:
    """All members, most preferred holder of ``study_uid`` first."""
    return sorted(set(members), key=lambda n: (-_weight(study_uid, n), n))


def owners(study_uid: str, members: Iterable[str], replicas: int = DEFAULT_REPLICAS) -> list[str]:
    if replicas < 1:
        raise ValueError("a study needs at least one replica")
    return rendezvous_order(study_uid, members)[:replicas]


@dataclass(frozen=True)
class Placement:
    owners: tuple[str, ...]
    # owner that stays unreachable -> the node holding a hinted copy for it meanwhile
    stand_ins: dict[str, str] = field(default_factory=dict)

    @property
    def targets(self) -> tuple[str, ...]:
        """Where copies go now: reachable owners, and stand-ins for the others."""
        return tuple(self.stand_ins.get(o, o) for o in self.owners)


def place(
    study_uid: str,
    members: Iterable[str],
    replicas: int = DEFAULT_REPLICAS,
    unreachable: Set[str] = frozenset(),
) -> Placement:
    """Owners, and for each owner unreachable past the threshold (the caller decides
    which are), the next member in rendezvous order that is neither an owner nor
    unreachable, nor already standing in for another owner."""
    order = rendezvous_order(study_uid, members)
    chosen = order[:replicas]
    spares = [n for n in order[replicas:] if n not in unreachable]
    stand_ins: dict[str, str] = {}
    for owner in chosen:
        if owner in unreachable and spares:
            stand_ins[owner] = spares.pop(0)
    return Placement(tuple(chosen), stand_ins)


def stand_ins_to_fill(
    study_uid: str,
    members: Iterable[str],
    me: str,
    replicas: int = DEFAULT_REPLICAS,
    unreachable: Set[str] = frozenset(),
) -> list[str]:
    """Stand-ins that this node, holding the study, should copy it to.

    An owner that died holding its copy leaves the study one replica short even though
    nothing is owed to it any more. One live node restores the count: a live owner
    (which holds the study, or is owed it), or, with every owner unreachable, each
    holder, since no one else is sure to have it.
    """
    placement = place(study_uid, members, replicas, unreachable)
    if not placement.stand_ins:
        return []
    live_owners = [o for o in placement.owners if o not in unreachable]
    if live_owners and me not in live_owners:
        return []
    return [s for s in placement.stand_ins.values() if s != me]
