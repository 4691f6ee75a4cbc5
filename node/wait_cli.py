"""``pacsmesh status --wait-replicated``: wait until a running node owes nothing.

For maintenance scripts: before a node is taken down, every study it received must be on
its R owners, as the node's own ``under_replicated`` says (a count that is never early:
see replication/durability.py). The waiting is pure over an injected status reader and
clock; the CLI gives it HTTP and the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

POLL_SECONDS = 0.25


@dataclass(frozen=True)
class WaitResult:
    replicated: bool
    waited: float
    status: dict[str, Any]


def wait_replicated(
    read_status: Callable[[], dict[str, Any]], timeout: float,
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    poll: float = POLL_SECONDS,
) -> WaitResult:
    """Read the status until ``under_replicated`` is 0 or ``timeout`` seconds pass (the
    status is read at least once, and once more at the deadline)."""
    start = clock()
    while True:
        status = read_status()
        waited = clock() - start
        if int(status["under_replicated"]) == 0:
            return WaitResult(True, waited, status)
        if waited >= timeout:
            return WaitResult(False, waited, status)
        sleep(min(poll, max(0.0, timeout - waited)))


def owed_lines(status: dict[str, Any]) -> list[str]:
    """What is still owed, per member: counts and node ids only, never patient data."""
    replication = status.get("replication") or {}
    states = {p["node_id"]: p["state"] for p in replication.get("peers", [])}
    studies, copies = int(status["under_replicated"]), int(status["outbox_depth"])
    lines = [f"not replicated: {_n(studies, 'study', 'studies')} not yet on their owners,"
             f" {_n(copies, 'copy', 'copies')} still to send"]
    for row in replication.get("owed", []):
        name = row["aet"] or row["node_id"][:15]
        lines.append(f"  owed to {name} ({row['node_id'][:15]}, "
                     f"{states.get(row['node_id'], 'unknown')}): "
                     f"{_n(row['studies'], 'study', 'studies')}, "
                     f"{_n(row['instances'], 'instance', 'instances')}")
    short = int(replication.get("short_of_members", 0))
    if short:
        lines.append(f"  {_n(short, 'study', 'studies')} cannot have all their"
                     " copies: this node is in no mesh, or the mesh has fewer members than"
                     " the replica count")
    return lines


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"
