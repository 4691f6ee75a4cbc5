"""What the dashboard, /metrics and the alerts know of the mesh, and the seam they ask it
through: node/ defines :class:`MeshView`, the composition root (node/app.py) fills it from
discovery and replication. A lone node answers with :class:`NoMesh`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Member:
    node_id: str
    aet: str
    state: str  # alive, suspect, dead, unknown; "self" for this node
    addresses: tuple[str, ...] = ()
    last_seen: float | None = None  # epoch s of the last successful probe
    first_seen: float = 0.0
    is_self: bool = False
    since: float | None = None  # epoch s of its last change of state
    clock_offset: float | None = None  # s its clock is ahead of ours; None: not known
    # What the member itself reports (None: not known, e.g. it is not alive).
    version: str | None = None
    studies: int | None = None
    stored_bytes: int | None = None
    disk_free: int | None = None


@dataclass(frozen=True)
class PeerDebt:
    node_id: str
    aet: str
    copies: int
    bytes: int
    bytes_per_second: float = 0.0
    eta_seconds: float | None = None
    breaker: str = "closed"


@dataclass(frozen=True)
class UnderReplicated:
    study_uid: str
    why: str  # "copies owed" or "too few members"


@dataclass(frozen=True)
class MeshSnapshot:
    members: tuple[Member, ...] = ()
    debts: tuple[PeerDebt, ...] = ()
    under_replicated: tuple[UnderReplicated, ...] = ()
    copies_owed: int = 0
    fetch_failovers: int = 0
    fetch_failed: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class MeshView(Protocol):
    async def snapshot(self) -> MeshSnapshot: ...

    async def refresh(self) -> None:
        """Ask the members for what they report of themselves (called periodically)."""
        ...

    async def holders(self, study_uid: str) -> list[str]:
        """AE titles (or node ids) of the members holding the study, from the catalog."""
        ...


class NoMesh:
    async def snapshot(self) -> MeshSnapshot:
        return MeshSnapshot()

    async def refresh(self) -> None:
        return None

    async def holders(self, study_uid: str) -> list[str]:
        return []


@dataclass(frozen=True)
class Certificate:
    what: str  # e.g. "HTTPS certificate"
    not_after: float  # epoch s


@dataclass(frozen=True)
class Health:
    """One node's view at one moment: its own facts and its view of the mesh."""

    aet: str
    node_id: str
    version: str
    at: float  # epoch s when gathered
    studies: int
    instances: int
    stored_bytes: int
    disk_free: int
    disk_total: int
    quarantined: int
    mesh: MeshSnapshot = field(default_factory=MeshSnapshot)
    certificates: tuple[Certificate, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
