"""The audit rate limit for mesh refusals, with an injected clock."""

from __future__ import annotations

from discovery.refusal_limit import RefusalLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_row_per_address_per_window_then_the_count() -> None:
    clock = Clock()
    limiter = RefusalLimiter(window=60.0, clock=clock)
    assert limiter.admit("10.0.0.1") == 0
    assert [limiter.admit("10.0.0.1") for _ in range(49)] == [None] * 49
    assert limiter.admit("10.0.0.2") == 0  # another address: its own row
    clock.now += 59.9
    assert limiter.admit("10.0.0.1") is None
    clock.now += 0.1
    assert limiter.admit("10.0.0.1") == 50  # the next row says what was not recorded
    assert limiter.admit("10.0.0.1") is None
    clock.now += 61
    assert limiter.admit("10.0.0.1") == 1
    clock.now += 61
    assert limiter.admit("10.0.0.1") == 0


def test_memory_is_bounded_and_counts_are_kept_longest() -> None:
    clock = Clock()
    limiter = RefusalLimiter(window=60.0, clock=clock, max_addresses=3)
    assert limiter.admit("a") == 0
    assert limiter.admit("a") is None  # a has a count to report
    assert limiter.admit("b") == 0
    clock.now += 61
    assert limiter.admit("c") == 0
    assert limiter.admit("d") == 0  # full: b (expired, nothing counted) is forgotten
    assert set(limiter._slots) == {"a", "c", "d"}
    assert limiter.admit("a") == 1
    assert limiter.admit("e") == 0  # still full of live slots: the oldest goes
    assert len(limiter._slots) == 3
