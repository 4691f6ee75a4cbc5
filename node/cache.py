"""Which cached instances go when the cache is over its size: least recently used first.

Pure code. Only instances fetched from the mesh are cache entries at all; anything
received by C-STORE from outside never is. Entries of a study this node owns (rendezvous
placement) are pinned: replication would only bring them back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheEntry:
    sop_uid: str
    study_uid: str
    size: int
    last_used: float


def evictions(
    entries: Iterable[CacheEntry], budget: int, pinned: Callable[[str], bool],
    keep: frozenset[str] = frozenset(),
) -> list[str]:
    """SOP Instance UIDs to drop, oldest use first, until the cache fits ``budget``.

    ``keep`` holds instances in use right now (a retrieve still sending them). Pinned
    entries count towards the total but never go, so a cache full of owned studies
    stays over budget rather than losing copies the mesh relies on.
    """
    entries = list(entries)
    total = sum(e.size for e in entries)
    out: list[str] = []
    for entry in sorted(entries, key=lambda e: (e.last_used, e.sop_uid)):
        if total <= budget:
            break
        if entry.sop_uid in keep or pinned(entry.study_uid):
            continue
        out.append(entry.sop_uid)
        total -= entry.size
    return out
