"""A circuit breaker per peer: stop hammering a peer that keeps failing, try it again later.

Pure code with an injected clock. Retries of single transfers are tenacity's job; this
decides whether a peer is worth trying at all right now.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class BreakerState(enum.Enum):
    CLOSED = "closed"  # transfers flow
    OPEN = "open"  # peer skipped until the cool-down ends
    HALF_OPEN = "half-open"  # one trial transfer decides


@dataclass
class CircuitBreaker:
    clock: Callable[[], float]
    failure_threshold: int = 5
    cool_down: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at < self.cool_down:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allow(self) -> bool:
        """May a transfer to this peer start now?"""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self.trial_running:
            self.trial_running = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.trial_running = 0, None, False

    def failed(self) -> None:
        self.trial_running = False
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.failure_threshold:
            self.opened_at = self.clock()  # (re)open: a failed trial restarts the cool-down
