"""Send rate and catch-up progress: pure arithmetic, with an injected clock."""

from __future__ import annotations

import pytest

from replication.progress import Backlog, CatchUp, RateWindow, catch_up


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_is_bytes_over_the_sliding_window() -> None:
    clock = Clock()
    rate = RateWindow(clock, window=10.0)
    assert rate.rate() == 0.0
    for _ in range(5):
        rate.add(2_000_000)
        clock.now += 1.0
    assert rate.rate() == pytest.approx(1_000_000)  # 10 MB within the last 10 s
    clock.now += 7.5  # the first three sends (at 1000, 1001, 1002 s) have left the window
    assert rate.rate() == pytest.approx(400_000)
    clock.now += 60.0
    assert rate.rate() == 0.0  # nothing sent lately: no rate, however much before


def test_backlog_counts_deliveries_until_the_outbox_is_empty_again() -> None:
    backlog = Backlog()
    for _ in range(3):
        backlog.record_delivery()
    backlog.observe(depth=7)
    assert backlog.delivered == 3
    backlog.observe(depth=0)  # caught up
    assert backlog.delivered == 0
    backlog.record_delivery()
    assert backlog.delivered == 1  # a new backlog counts from zero


def test_catch_up_progress_and_eta_from_the_rate() -> None:
    assert catch_up(delivered=30, depth=70, bytes_waiting=350_000_000, rate=5_000_000) == \
        CatchUp(delivered=30, queued=100, eta_seconds=70.0)
    # Nothing flowing (peer down, breaker open): no ETA rather than an infinite one.
    assert catch_up(30, 70, 350_000_000, 0.0).eta_seconds is None
    assert catch_up(0, 0, 0, 0.0) == CatchUp(0, 0, 0.0)
    assert catch_up(30, 70, 350_000_000, 5e6).as_json() == \
        {"delivered": 30, "queued": 100, "eta_seconds": 70.0}
