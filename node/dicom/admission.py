"""Who gets one of the DICOM port's association slots (pure code, clock injected).

A connection is counted from the moment it is accepted, long before its A-ASSOCIATE-RQ
says which AE it claims to be (a flood may never send one). So:

- every address holds at most ``per_address`` connections at once;
- ``reserved`` of the ``total`` slots are kept for known AEs: a connection takes one only
  when the general slots are full and it comes from an address where a known AE lives
  (a configured modality's host, a mesh member's address). Its association request must
  then name a known AE consistent with that address, or it is rejected at once;
- a known AE that arrives in a general slot moves to the reserve while there is room,
  leaving the general slot to others.

Refusals are many during a flood; :class:`RefusalThrottle` says which of them deserve an
audit row and a log line, so the trail shows the flood without being filled by it.
"""

from __future__ import annotations

import enum
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


class Pool(enum.Enum):
    GENERAL = "general"
    RESERVE = "reserve"


@dataclass(frozen=True)
class AdmissionLimits:
    total: int = 32  # max_associations
    per_address: int = 8  # max_associations_per_address
    reserved: int = 8  # reserved_associations, within total, for known AEs

    def __post_init__(self) -> None:
        if self.total < 1 or self.per_address < 1 or not 0 <= self.reserved < self.total:
            raise ValueError(f"inconsistent association limits {self}")


@dataclass(eq=False)
class Slot:
    """One accepted connection's place; identity matters, not value."""

    address: str
    pool: Pool
    released: bool = False


@dataclass(frozen=True)
class Refused:
    """Why a connection or its request was turned away (one line, no patient data)."""

    reason: str


class Admission:
    """The slots in use; safe to call from the accepting thread and association threads."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._used: Counter[Pool] = Counter()
        self._per_address: Counter[str] = Counter()

    def connect(self, address: str, reserve_eligible: bool) -> Slot | Refused:
        """At accept: ``reserve_eligible`` if a known AE lives at ``address``."""
        limits = self.limits
        with self._lock:
            if self._per_address[address] >= limits.per_address:
                return Refused(f"{limits.per_address} connections from this address already")
            if self._used[Pool.GENERAL] < limits.total - limits.reserved:
                pool = Pool.GENERAL
            elif reserve_eligible and self._used[Pool.RESERVE] < limits.reserved:
                pool = Pool.RESERVE
            else:
                return Refused(
                    f"all {limits.total - limits.reserved} association slots in use "
                    f"(and {limits.reserved} kept for known AEs)")
            self._used[pool] += 1
            self._per_address[address] += 1
            return Slot(address, pool)

    def requested(self, slot: Slot, known: bool) -> Refused | None:
        """At the association request: ``known`` if it names a known AE consistent with
        the slot's address. A reserved slot is only for those."""
        with self._lock:
            if slot.pool is Pool.RESERVE:
                if known:
                    return None
                return Refused("only known AEs may use the reserved association slots")
            if known and self._used[Pool.RESERVE] < self.limits.reserved:
                self._used[Pool.GENERAL] -= 1
                self._used[Pool.RESERVE] += 1
                slot.pool = Pool.RESERVE
            return None

    def release(self, slot: Slot) -> None:
        """When the connection ends; a second call for the same slot does nothing."""
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._used[slot.pool] -= 1
            self._per_address[slot.address] -= 1
            if self._per_address[slot.address] <= 0:
                del self._per_address[slot.address]

    def in_use(self) -> dict[str, int]:
        with self._lock:
            return {pool.value: self._used[pool] for pool in Pool}


class RefusalThrottle:
    """At most one report per (kind, address) per ``window`` seconds, carrying how many
    refusals it stands for."""

    def __init__(self, clock: Clock, window: float = 60.0, max_keys: int = 4096) -> None:
        self.clock = clock
        self.window = window
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._since: dict[tuple[str, str], tuple[float, int]] = {}

    def report(self, kind: str, address: str) -> int | None:
        """The number of refusals to report now (this one and those held back), or None
        to stay quiet."""
        now = self.clock()
        key = (kind, address)
        with self._lock:
            started, held = self._since.get(key, (None, 0))
            if started is not None and now - started < self.window:
                self._since[key] = (started, held + 1)
                return None
            if len(self._since) >= self.max_keys:
                # A scan from many addresses: forget windows that have ended; if none
                # has, every further address is reported (the trail batches writes).
                self._since = {k: v for k, v in self._since.items()
                               if now - v[0] < self.window}
            if len(self._since) < self.max_keys:
                self._since[key] = (now, 0)
            return held + 1
