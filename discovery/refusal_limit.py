"""How often a refused mesh connection becomes an audit row: one per address per window.

Every refusal on the mesh port (a TLS handshake that fails: no TLS 1.3, an unknown
certificate; a request without a member's certificate) is worth an audit row, but a
scanner making thousands a minute must not fill the trail. The first refusal from an
address is recorded; the next ones within ``window`` seconds are only counted, and the
count goes into that address's next row. Pure code; the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_SECONDS = 60.0
# Addresses remembered at once; beyond it the oldest are forgotten (a flood from that
# many addresses gets at most one row per address it comes back from).
MAX_ADDRESSES = 4096


@dataclass
class _Slot:
    until: float
    suppressed: int = 0


@dataclass
class RefusalLimiter:
    window: float = WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    max_addresses: int = MAX_ADDRESSES
    _slots: dict[str, _Slot] = field(default_factory=dict)

    def admit(self, address: str) -> int | None:
        """None when this refusal is only counted; else the number counted (not recorded)
        from ``address`` since its last row, and a row is to be written now."""
        now = self.clock()
        slot = self._slots.get(address)
        if slot is not None and now < slot.until:
            slot.suppressed += 1
            return None
        suppressed = slot.suppressed if slot is not None else 0
        self._slots.pop(address, None)
        self._make_room(now)
        self._slots[address] = _Slot(now + self.window)
        return suppressed

    def _make_room(self, now: float) -> None:
        if len(self._slots) < self.max_addresses:
            return
        # Expired slots with nothing counted can go: their next row would say nothing.
        for address in [a for a, s in self._slots.items() if s.until <= now and not s.suppressed]:
            del self._slots[address]
        while len(self._slots) >= self.max_addresses:
            del self._slots[next(iter(self._slots))]  # oldest first (insertion order)
