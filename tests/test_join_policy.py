"""The joining side's decisions, pure: pinned tokens, old tokens, back-off, giving up."""

from __future__ import annotations

import itertools
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from discovery.invite import (
    PREFIX,
    InviteError,
    b64,
    canonical,
    make_invite,
    parse_invite,
    unb64,
)
from discovery.join_policy import (
    REFUSED_CAP,
    TRANSIENT_CAP,
    Attempt,
    JoinSchedule,
    JoinState,
    Outcome,
    join_text,
    refusal,
    telling,
    wait_after,
)
from node.identity import node_id_digest, node_id_for, node_id_from_digest

NOW = 1_700_000_000.0
ID_A = node_id_for(b"certificate a")
ID_B = node_id_for(b"certificate b")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_node_id_and_digest_are_inverse() -> None:
    assert node_id_from_digest(node_id_digest(ID_A)) == ID_A
    assert len(node_id_digest(ID_A)) == 32


def test_pinned_token_carries_the_members_hashes() -> None:
    admin = Ed25519PrivateKey.generate()
    token = make_invite(admin, "mesh-1", NOW, 1, ("10.0.0.1:11113",), pins=(ID_A, ID_B, ID_A))
    invite = parse_invite(token)
    assert invite.pins == (ID_A, ID_B) and invite.version == 2
    assert token.startswith(PREFIX + ".")  # older members still parse and admit with it
    # A pin cannot be swapped for another: the admin signed the list.
    _, body, sig = token.split(".")
    data = json.loads(unb64(body))
    data["pins"] = [b64(node_id_digest(ID_B))]
    with pytest.raises(InviteError, match="signature"):
        parse_invite(f"{PREFIX}.{b64(canonical(data))}.{sig}")


def test_token_without_pins_is_the_version_1_format() -> None:
    admin = Ed25519PrivateKey.generate()
    token = make_invite(admin, "mesh-1", NOW, 1)
    body = token.split(".")[1]
    assert b'"v"' not in unb64(body)
    invite = parse_invite(token)
    assert invite.pins == () and invite.version == 1


def test_a_token_as_older_nodes_made_it_still_parses() -> None:
    admin = Ed25519PrivateKey.generate()
    payload = canonical({"mesh": "m", "admin": b64(admin.public_key().public_bytes_raw()),
                         "id": "00", "exp": NOW, "uses": 2, "seeds": ["h:1"]})
    invite = parse_invite(f"{PREFIX}.{b64(payload)}.{b64(admin.sign(payload))}")
    assert (invite.pins, invite.seeds, invite.uses) == ((), ("h:1",), 2)


def test_a_pin_that_is_not_a_hash_is_refused() -> None:
    admin = Ed25519PrivateKey.generate()
    with pytest.raises(InviteError):
        make_invite(admin, "m", NOW, 1, pins=("not-a-node-id",))
    payload = canonical({"mesh": "m", "admin": b64(admin.public_key().public_bytes_raw()),
                         "id": "00", "exp": NOW, "uses": 1, "v": 2, "pins": [b64(b"short")]})
    with pytest.raises(InviteError, match="not an invite"):
        parse_invite(f"{PREFIX}.{b64(payload)}.{b64(admin.sign(payload))}")


@pytest.mark.parametrize("reason", ["invite has expired", "invite has no uses left",
                                    "this node has been revoked", "node is revoked"])
def test_refusals_that_can_never_succeed_are_final(reason: str) -> None:
    assert refusal("h:1", reason).outcome is Outcome.REFUSED_FOR_GOOD


def test_other_refusals_are_retried_and_control_characters_escaped() -> None:
    attempt = refusal("h:1", "invite is for another mesh\x1b[2J")
    assert attempt.outcome is Outcome.REFUSED and attempt.reason.endswith("\\x1b[2J")


def test_the_most_telling_attempt_of_a_round_decides() -> None:
    down = Attempt(Outcome.UNREACHABLE, "a:1", "refused")
    odd = Attempt(Outcome.UNTRUSTED, "b:1", "stand-in")
    no = refusal("c:1", "invite has no uses left")
    assert telling([down, odd]) is odd
    assert telling([down, no, odd]) is no
    assert telling([]).outcome is Outcome.UNREACHABLE


def test_refused_rounds_back_off_to_minutes() -> None:
    waits = [wait_after(Outcome.REFUSED, n) for n in range(1, 12)]
    assert 2 <= waits[0] <= 4 and 4 <= waits[1] <= 6
    assert all(b > a - 2 for a, b in itertools.pairwise(waits))
    assert REFUSED_CAP <= waits[-1] <= REFUSED_CAP + 2
    assert sum(waits[:4]) >= 30  # at most five refused attempts in the first 30 s


def test_unreachable_members_are_retried_briskly_up_to_30_s() -> None:
    waits = [wait_after(Outcome.UNREACHABLE, n) for n in range(1, 10)]
    assert 1 <= waits[0] <= 2 and TRANSIENT_CAP <= waits[-1] <= TRANSIENT_CAP + 1


def test_schedule_logs_a_change_once_and_stops_for_good() -> None:
    clock = Clock()
    schedule = JoinSchedule(clock)
    assert schedule.due()
    other_mesh = refusal("a:1", "invite is for another mesh")
    assert schedule.record(other_mesh) is True
    assert not schedule.due()
    clock.now = schedule.next_at
    assert schedule.due()
    assert schedule.record(other_mesh) is False  # the same refusal: not logged again
    assert schedule.record(Attempt(Outcome.UNREACHABLE, "a:1", "timeout")) is True
    assert schedule.record(Attempt(Outcome.UNREACHABLE, "b:1", "reset")) is False
    assert schedule.failures == 4
    assert schedule.record(refusal("a:1", "invite has no uses left")) is True
    assert schedule.state is JoinState.STOPPED and not schedule.due()
    clock.now += 10**6
    assert not schedule.due()
    text = join_text(schedule.as_json())
    assert text is not None and text.startswith("join stopped: invite has no uses left")


def test_a_new_member_is_tried_at_once_unless_members_refuse() -> None:
    clock = Clock()
    schedule = JoinSchedule(clock)
    schedule.record(Attempt(Outcome.UNREACHABLE, "a:1", "timeout"))
    schedule.nudge()
    assert schedule.due()
    schedule.record(refusal("a:1", "invite is for another mesh"))
    schedule.nudge()
    assert not schedule.due()
    assert join_text(schedule.as_json()).startswith("joining: 2 failed attempt(s)")
    schedule.record(Attempt(Outcome.JOINED, "a:1"))
    assert schedule.state is JoinState.JOINED and join_text(schedule.as_json()) is None
