"""When a node holding an invite tries to join again, and when it gives up. Pure code.

Every refusal costs the admitting member a warning and an audit row, so a refused node
backs off (tenacity's exponential wait with jitter, capped at five minutes); a member
that does not answer yet is tried again at a brisker pace (capped at 30 s), and a new
candidate (one found over mDNS) is tried at once. A refusal that can never turn into an
admission (an expired or used-up token, a revoked node) ends the attempts. What the node
logs is decided here too: an outcome once when it changes, not on every attempt.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, wait_exponential, wait_random
from tenacity.wait import wait_base

REFUSED_CAP = 300.0
TRANSIENT_CAP = 30.0
# Reasons an admitting member gives (discovery.invite, discovery.roster) that no retry can
# change: uses are never given back, time does not run backwards, revocation is final.
# A taken AE title is not among these: it is free again once its holder is revoked.
FOR_GOOD = ("invite has expired", "invite has no uses left", "has been revoked",
            "node is revoked")


class Outcome(enum.Enum):
    JOINED = "joined"
    REFUSED_FOR_GOOD = "refused for good"
    REFUSED = "refused"
    UNTRUSTED = "untrusted"  # the server is not a member the invite pins: told nothing
    UNREACHABLE = "unreachable"


class JoinState(enum.Enum):
    JOINING = "joining"
    JOINED = "joined"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    where: str  # host:port of the member tried ("" when none was)
    reason: str = ""


def printable(text: str, limit: int = 200) -> str:
    """Text from the network made safe for one log line."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])


def refusal(where: str, reason: str) -> Attempt:
    """What an admitting member's refusal means for the next attempt."""
    reason = printable(reason)
    final = any(phrase in reason for phrase in FOR_GOOD)
    return Attempt(Outcome.REFUSED_FOR_GOOD if final else Outcome.REFUSED, where, reason)


NO_CANDIDATE = Attempt(Outcome.UNREACHABLE, "", "no member to ask yet (none named in the "
                       "invite, given with --peer, or found over mDNS)")
_RANK = {o: i for i, o in enumerate(Outcome)}  # the order of the enum: most telling first


def telling(attempts: Iterable[Attempt]) -> Attempt:
    """The one attempt of a round that decides what happens next."""
    return min(attempts, key=lambda a: _RANK[a.outcome], default=NO_CANDIDATE)


_WAITS: dict[Outcome, wait_base] = {
    # 2 s, 4 s, 8 s ... 5 min, each plus up to 2 s, so refused nodes do not come in step.
    Outcome.REFUSED: wait_exponential(multiplier=2, max=REFUSED_CAP) + wait_random(0, 2),
    Outcome.UNTRUSTED: wait_exponential(multiplier=1, max=TRANSIENT_CAP) + wait_random(0, 1),
    Outcome.UNREACHABLE: wait_exponential(multiplier=1, max=TRANSIENT_CAP) + wait_random(0, 1),
}


def wait_after(outcome: Outcome, failures: int) -> float:
    """Seconds before the next round, after ``failures`` failed rounds in a row."""
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = failures
    return float(_WAITS[outcome](state))


class JoinSchedule:
    """The joining side's state: due or not, how many rounds failed, the last outcome."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.state = JoinState.JOINING
        self.failures = 0
        self.next_at = clock()
        self.last: Attempt | None = None

    def due(self) -> bool:
        return self.state is JoinState.JOINING and self._clock() >= self.next_at

    def record(self, result: Attempt) -> bool:
        """Take in a round's outcome; True when it differs from the last (log it then)."""
        before = None if self.last is None else _key(self.last)
        self.last = result
        if result.outcome is Outcome.JOINED:
            self.state = JoinState.JOINED
        elif result.outcome is Outcome.REFUSED_FOR_GOOD:
            self.state = JoinState.STOPPED
        else:
            self.failures += 1
            self.next_at = self._clock() + wait_after(result.outcome, self.failures)
        return _key(result) != before

    def nudge(self) -> None:
        """A new member to try: now, unless members are refusing us (they would again)."""
        if self.state is JoinState.JOINING and (
            self.last is None or self.last.outcome is not Outcome.REFUSED
        ):
            self.next_at = self._clock()

    def as_json(self) -> dict[str, object]:
        last = self.last
        return {
            "state": self.state.value,
            "failed_attempts": self.failures,
            "last_outcome": last.outcome.value if last else None,
            "last_reason": last.reason if last else "",
            "last_member": last.where if last else "",
            "next_attempt_in": (round(max(0.0, self.next_at - self._clock()), 1)
                                if self.state is JoinState.JOINING else None),
        }


def _key(attempt: Attempt) -> tuple[Outcome, str]:
    # Unreachable members fail with varying texts (which one failed first, a timeout or a
    # reset): the change worth a log line is the kind of failure, not its wording.
    return attempt.outcome, "" if attempt.outcome is Outcome.UNREACHABLE else attempt.reason


def join_text(status: dict[str, object] | None) -> str | None:
    """One line for people (``pacsmesh status``, ``mesh status``) from :meth:`as_json`;
    None when there is nothing to say (no invite, or joined)."""
    if not status or status.get("state") == JoinState.JOINED.value:
        return None
    reason = status.get("last_reason") or "no attempt yet"
    where = f" ({status['last_member']})" if status.get("last_member") else ""
    if status.get("state") == JoinState.STOPPED.value:
        return f"join stopped: {reason}{where}; this token can never succeed"
    return (f"joining: {status.get('failed_attempts', 0)} failed attempt(s), last "
            f"{status.get('last_outcome') or '-'}{where}: {reason}; next in "
            f"{status.get('next_attempt_in')} s")
