"""Anti-entropy digests: find what two nodes hold differently without listing everything.

Pure code. Instances are grouped by study into 256 buckets (by the study's hash); each
bucket's digest covers the (SOP Instance UID, SHA-256) pairs of its studies. Two nodes
compare bucket digests first and exchange instance lists only where buckets differ.
Absence never means deletion: a difference is something to copy, never to remove.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

BUCKETS = 256


def bucket_of(study_uid: str) -> int:
    return hashlib.sha256(study_uid.encode()).digest()[0] % BUCKETS


@dataclass(frozen=True)
class Held:
    """One instance a node holds."""

    study_uid: str
    sop_uid: str
    sha256: str


def bucket_digests(held: Iterable[Held]) -> dict[int, str]:
    """Bucket -> digest, for the buckets that hold anything."""
    by_bucket: dict[int, list[tuple[str, str]]] = {}
    for item in held:
        by_bucket.setdefault(bucket_of(item.study_uid), []).append((item.sop_uid, item.sha256))
    out = {}
    for bucket, pairs in by_bucket.items():
        h = hashlib.sha256()
        for sop_uid, sha in sorted(pairs):
            h.update(f"{sop_uid}\x00{sha}\n".encode())
        out[bucket] = h.hexdigest()[:32]
    return out


def differing_buckets(ours: Mapping[int, str], theirs: Mapping[int, str]) -> list[int]:
    return sorted(b for b in set(ours) | set(theirs) if ours.get(b) != theirs.get(b))


@dataclass(frozen=True)
class Repair:
    to_fetch: tuple[str, ...]  # SOP Instance UIDs they hold and we lack
    to_offer: tuple[str, ...]  # SOP Instance UIDs we hold and they lack
    disagree: tuple[str, ...]  # held by both with different bytes: needs a third opinion


def compare_instances(ours: Mapping[str, str], theirs: Mapping[str, str]) -> Repair:
    """Instance lists (SOP Instance UID -> SHA-256) of the differing buckets."""
    return Repair(
        to_fetch=tuple(sorted(set(theirs) - set(ours))),
        to_offer=tuple(sorted(set(ours) - set(theirs))),
        disagree=tuple(sorted(u for u in set(ours) & set(theirs) if ours[u] != theirs[u])),
    )
