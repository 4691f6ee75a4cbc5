"""The per-peer circuit breaker, driven by a fake clock."""

from __future__ import annotations

from replication.breaker import BreakerState, CircuitBreaker


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_repeated_failures_and_recovers_through_one_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock, failure_threshold=3, cool_down=10)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert breaker.state is BreakerState.CLOSED
    breaker.failed()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now = 10
    assert breaker.allow()  # the one trial
    assert not breaker.allow()  # nobody else while it runs
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_a_failed_trial_reopens_for_a_full_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock, failure_threshold=1, cool_down=10)
    breaker.failed()
    clock.now = 10
    assert breaker.allow()
    breaker.failed()
    clock.now = 19
    assert breaker.state is BreakerState.OPEN
    clock.now = 20
    assert breaker.allow()


def test_success_resets_the_count() -> None:
    breaker = CircuitBreaker(Clock(), failure_threshold=2)
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert breaker.state is BreakerState.CLOSED
