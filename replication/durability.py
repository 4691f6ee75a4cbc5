"""What this node still owes before the studies it received are safe: the truthful count.

A study this node received (from a modality, an upload or an import; a copy that came
from a member is that member's to place) is replicated once every one of its R owners
other than this node has acknowledged a durable write (fsync and index commit on its
side) of every instance. Until then it is owed, in one of three states counted here:

- pending: stored and committed here, not yet turned into outbox rows (the replicator
  reads the change feed from a checkpoint, so this lasts up to a loop round or more);
- queued: an outbox row, from enqueue through every try and while in flight, until the
  owner's acknowledgement deletes it; hinted copies for stand-ins are rows too, and the
  owner's own row stays until the owner acknowledges, so a stand-in copy never makes a
  study count as replicated;
- short: the mesh has fewer than R members, or this node is in none, so R copies
  cannot exist whatever is sent.

Pending and queued are read in one SQL statement, so an enqueue committing meanwhile
is seen either as rows or as pending changes: no instant reads as zero. The tally is
pure code; ``owed`` is the I/O edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.index import Index
from replication.placement import owners

# Instances whose source starts with this came from a member (replication, hinted
# copies, the retrieve cache): the sender is the one that must place them.
FOREIGN_PREFIX = "mesh:"
CHECKPOINT = ("replication", "local_seq")  # replication.service.STATE


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
        }


def tally(
    rows: Iterable[dict[str, Any]], members: Sequence[str], me: str, replicas: int,
    in_mesh: bool,
) -> Debt:
    """The debt that ``Index.replication_debt`` rows describe, placed over ``members``."""
    copies, studies, short = 0, set(), set()
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
    return Debt(copies, frozenset(studies | short), frozenset(short),
                {t: Owed(frozenset(s), n) for t, (s, n) in targets.items()})


async def owed(
    index: Index, membership: Membership, replicas: int, study_uid: str | None = None
) -> Debt:
    members = membership.members()
    in_mesh = membership.is_member
    rows = await index.replication_debt(
        CHECKPOINT, FOREIGN_PREFIX, study_uid,
        with_received=not in_mesh or len(set(members)) < replicas,
    )
    return tally(rows, members, membership.node_id, replicas, in_mesh)
