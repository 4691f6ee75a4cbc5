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
