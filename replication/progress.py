"""How fast copies flow to a peer, and how far a catch-up has come: pure, injected clock.

The sender measures: bytes handed to a peer's connections over a sliding window, and
copies delivered since that peer's backlog began (a backlog begins when its outbox
depth leaves zero and ends when it returns there).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

RATE_WINDOW = 10.0


@dataclass
class RateWindow:
    clock: Callable[[], float]
    window: float = RATE_WINDOW
    _events: deque[tuple[float, int]] = field(default_factory=deque)
    _total: int = 0

    def add(self, nbytes: int) -> None:
        self._events.append((self.clock(), nbytes))
        self._total += nbytes
        self._forget()

    def rate(self) -> float:
        """Bytes per second over the last ``window`` seconds."""
        self._forget()
        return self._total / self.window

    def _forget(self) -> None:
        horizon = self.clock() - self.window
        while self._events and self._events[0][0] <= horizon:
            self._total -= self._events.popleft()[1]


@dataclass
class Backlog:
    """Copies delivered to one peer since its outbox last was empty."""

    delivered: int = 0

    def observe(self, depth: int) -> None:
        if depth == 0:
            self.delivered = 0  # caught up: the next backlog counts from zero

    def record_delivery(self) -> None:
        self.delivered += 1


@dataclass(frozen=True)
class CatchUp:
    delivered: int  # copies delivered since the backlog began
    queued: int  # copies queued since it began: delivered plus still waiting
    eta_seconds: float | None  # None while nothing flows

    def as_json(self) -> dict[str, object]:
        return {"delivered": self.delivered, "queued": self.queued,
                "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1)}


def catch_up(delivered: int, depth: int, bytes_waiting: int, rate: float) -> CatchUp:
    eta: float | None = None
    if depth == 0:
        eta = 0.0
    elif rate > 0:
        eta = bytes_waiting / rate
    return CatchUp(delivered, delivered + depth, eta)
