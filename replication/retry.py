"""When to try a copy again: tenacity's policies, in the two places copies are retried.

- Within one send: a connection that drops or is refused at the TCP level is tried again
  at once a couple of times (a peer restarting, a transient reset), with short jittered
  waits. An HTTP answer is never retried here: it is the receiver's considered verdict.
- Across sends: a copy that still failed is postponed in the outbox (a row that
  survives restarts), by tenacity's jittered exponential wait over its attempts, so
  many nodes retrying one peer do not come back in step.
"""

from __future__ import annotations

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from discovery.probe import ProbeFailed, Refused

QUICK_ATTEMPTS = 3
# Outbox waits: up to 0.5 s, 1 s, 2 s ... capped at 5 minutes, drawn uniformly below.
_OUTBOX_WAIT = wait_random_exponential(multiplier=0.5, max=300)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ProbeFailed) and not isinstance(exc, Refused)


def quick_retries() -> AsyncRetrying:
    """``async for attempt in quick_retries(): with attempt: ...`` around one send."""
    return AsyncRetrying(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(QUICK_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.2, max=2),
        reraise=True,
    )


def outbox_wait(attempts: int) -> float:
    """Seconds before a copy that failed ``attempts`` times before is tried again."""
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempts + 1
    return float(_OUTBOX_WAIT(state))
