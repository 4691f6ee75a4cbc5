"""``pacsmesh status --wait-replicated``: the waiting and its message, pure."""

from __future__ import annotations

from typing import Any

from node.wait_cli import owed_lines, wait_replicated


def _status(studies: int, copies: int = 0, **replication: Any) -> dict[str, Any]:
    return {"under_replicated": studies, "outbox_depth": copies, "replication": replication}


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_returns_as_soon_as_nothing_is_owed() -> None:
    clock = _Clock()
    answers = iter([_status(1, 30), _status(1, 2), _status(0)])
    result = wait_replicated(lambda: next(answers), 10, clock, clock.sleep, poll=0.5)
    assert result.replicated and result.waited == 1.0


def test_times_out_with_the_last_status_read_at_the_deadline() -> None:
    clock = _Clock()
    reads: list[float] = []

    def read() -> dict[str, Any]:
        reads.append(clock.now)
        return _status(2, 5)

    result = wait_replicated(read, 1.2, clock, clock.sleep, poll=0.5)
    assert not result.replicated and reads == [0.0, 0.5, 1.0, 1.2]


def test_message_names_each_owner_and_what_it_lacks_without_patient_data() -> None:
    status = _status(
        2, 31, peers=[{"node_id": "B" * 52, "state": "dead"}],
        owed=[{"node_id": "B" * 52, "aet": "NODEB", "studies": 1, "instances": 30},
              {"node_id": "C" * 52, "aet": "", "studies": 1, "instances": 1}],
        short_of_members=1,
    )
    lines = owed_lines(status)
    assert lines[0] == "not replicated: 2 studies not yet on their owners, 31 copies still to send"
    assert lines[1] == f"  owed to NODEB ({'B' * 15}, dead): 1 study, 30 instances"
    assert lines[2] == f"  owed to {'C' * 15} ({'C' * 15}, unknown): 1 study, 1 instance"
    assert "fewer members than the replica count" in lines[3]
