"""Retry policies (tenacity): which failures are retried at once, and outbox waits."""

from __future__ import annotations

import pytest

from discovery.probe import ProbeFailed, Refused
from replication.retry import QUICK_ATTEMPTS, outbox_wait, quick_retries


async def _count_tries(exc: Exception) -> int:
    tries = 0
    with pytest.raises(type(exc)):
        async for attempt in quick_retries():
            with attempt:
                tries += 1
                raise exc
    return tries


async def test_dropped_connections_are_retried_at_once() -> None:
    assert await _count_tries(ProbeFailed("connection reset")) == QUICK_ATTEMPTS


async def test_an_http_answer_is_final_for_this_send() -> None:
    assert await _count_tries(Refused(503, "busy")) == 1
    assert await _count_tries(ValueError("malformed answer")) == 1


def test_outbox_waits_grow_with_jitter_and_stay_capped() -> None:
    for attempts, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 300.0), (60, 300.0)]:
        waits = [outbox_wait(attempts) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits), (attempts, max(waits))
        assert len(set(waits)) > 150  # jittered: nodes do not retry in step
