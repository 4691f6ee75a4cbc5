"""The discovery front without a network: its injected wall clock, and the error tree."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from discovery import errors
from discovery.invite import Invite, InviteError
from discovery.join import JoinClient, Joining
from discovery.join_policy import JoinState
from discovery.membership import MembershipError, MembershipStore
from discovery.probe import ProbeFailed, Refused
from discovery.records import RecordError
from discovery.roster import RosterError
from discovery.service import (
    Discovery,
    DiscoveryError,
    DiscoverySettings,
    NotAMember,
    PeerStore,
)
from discovery.tls import PeerNotTrusted
from node.identity import load_or_create_identity

WALL = 1_800_000_000.0


def test_peers_json_stamps_times_with_the_injected_wall_clock(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path / "id")
    settings = DiscoverySettings(identity=identity, aet="A", mesh_port=1, dicom_port=2,
                                 mdns=False)
    now = [100.0]
    discovery = Discovery(settings, MembershipStore(tmp_path), clock=lambda: now[0],
                          wall=lambda: WALL)
    discovery.table.hint("B-NODE", ["10.0.0.2"], 4242, "static", aet="B")
    now[0] = 130.0
    [peer] = discovery.peers_json()
    assert peer["first_seen"] == datetime.fromtimestamp(WALL - 30, UTC).isoformat(
        timespec="seconds")
    assert peer["last_seen"] is None


def test_a_round_with_the_invite_expired_by_the_wall_clock_stops_joining(
    tmp_path: Path,
) -> None:
    identity = load_or_create_identity(tmp_path / "id")
    invite = Invite("m", "k", "t", expires=WALL, uses=1)
    asked: list[str] = []

    async def admitted(*_: object) -> None:
        raise AssertionError("nobody was asked")

    def targets() -> list[tuple[str, int]]:
        asked.append("asked")
        return []

    joining = Joining(JoinClient(identity, "A", "token", invite, 1.0), lambda: 0.0, targets,
                      admitted, lambda *_: None, wall=lambda: WALL + 1)
    asyncio.run(joining.round())
    assert joining.schedule.state is JoinState.STOPPED
    assert joining.schedule.last is not None
    assert joining.schedule.last.reason == "invite has expired"
    assert asked == []


@pytest.mark.parametrize(("error", "branch", "builtin"), [
    (DiscoveryError, errors.DiscoveryError, Exception),
    (NotAMember, errors.LocalDiscoveryError, RuntimeError),
    (errors.StartFailed, errors.LocalDiscoveryError, RuntimeError),
    (MembershipError, errors.LocalDiscoveryError, RuntimeError),
    (InviteError, errors.LocalDiscoveryError, ValueError),
    (RosterError, errors.LocalDiscoveryError, ValueError),
    (RecordError, errors.RemoteDiscoveryError, ValueError),
    (PeerNotTrusted, errors.RemoteDiscoveryError, ConnectionError),
    (ProbeFailed, errors.RemoteDiscoveryError, ConnectionError),
    (Refused, ProbeFailed, ConnectionError),
    (errors.RemoteAnswerInvalid, errors.RemoteDiscoveryError, ValueError),
])
def test_each_discovery_error_is_on_its_branch_and_keeps_its_builtin_base(
    error: type[Exception], branch: type[Exception], builtin: type[Exception],
) -> None:
    assert issubclass(error, branch)
    assert issubclass(error, builtin)
    assert issubclass(error, errors.DiscoveryError)


def test_refused_keeps_its_status_and_detail() -> None:
    exc = Refused(403, "https://h:1/mesh/join: HTTP 403 no", "no")
    assert (exc.status, exc.detail, str(exc)) == (403, "no", "https://h:1/mesh/join: HTTP 403 no")


def test_persisted_peers_are_hints_and_rows_of_another_shape_are_skipped(
    tmp_path: Path,
) -> None:
    good = {"node_id": "B-NODE", "aet": "B", "addresses": ["10.0.0.2"], "mesh_port": 4242,
            "dicom_port": 11112, "last_seen": WALL}
    rows = [{"node_id": "C-NODE"}, {**good, "node_id": "D-NODE", "addresses": "10.0.0.4"},
            {**good, "node_id": "E-NODE", "mesh_port": None}, good]

    async def load() -> list[dict[str, object]]:
        return rows

    async def save(node_id: str, row: dict[str, object]) -> None:
        raise AssertionError("nothing is saved")

    identity = load_or_create_identity(tmp_path / "id")
    settings = DiscoverySettings(identity=identity, aet="A", mesh_port=1, dicom_port=2,
                                 mdns=False)
    discovery = Discovery(settings, MembershipStore(tmp_path), PeerStore(load, save),
                          clock=lambda: 0.0, wall=lambda: WALL)
    asyncio.run(discovery._prober.load_persisted())
    assert list(discovery.table.peers) == ["B-NODE"]
    peer = discovery.table.peers["B-NODE"]
    assert (peer.addresses, peer.mesh_port, peer.aet, peer.sources) == (
        ("10.0.0.2",), 4242, "B", frozenset({"persisted"}))
