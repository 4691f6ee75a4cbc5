"""discovery/wire.py without a network: every body a peer sends parses in its good form,
and every malformed form raises RemoteAnswerInvalid and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from discovery.errors import RemoteAnswerInvalid, RemoteDiscoveryError
from discovery.invite import b64
from discovery.roster import Roster
from discovery.wire import (
    Hello,
    Introduction,
    JoinReply,
    JoinRequest,
    PeerInfo,
    RosterPage,
)

PEER = {"node_id": "B", "aet": "B_AE", "addresses": ["10.0.0.2", "fe80::2"],
        "mesh_port": 4243, "dicom_port": 11113}
HELLO = {"node_id": "A", "aet": "A_AE", "mesh": "m1", "protocol": 1, "mesh_port": 4242,
         "dicom_port": 11112, "roster": "abcd", "peers": [PEER]}
ENTRY = {"kind": "founder", "node_id": "A", "cert": "PEM", "aet": "A_AE", "at": 1.0,
         "by": "admin", "sig": "c2ln"}
ROSTER = {"mesh": "mesh-1", "admin": "key", "entries": [ENTRY]}
JOIN = {"token": "pacsmesh-invite-1.x.y", "aet": "C_AE", "cert": "PEM", "proof": b64(b"sig")}

NOT_OBJECTS = [None, 1, "text", [1, 2], True]


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def test_a_hello_parses_and_round_trips() -> None:
    hello = Hello.from_json(HELLO)
    assert (hello.node_id, hello.aet, hello.mesh_hash, hello.mesh_port, hello.dicom_port,
            hello.roster_digest) == ("A", "A_AE", "m1", 4242, 11112, "abcd")
    assert hello.peers == (PeerInfo("B", ("10.0.0.2", "fe80::2"), 4243, "B_AE", 11113),)
    assert hello.to_json() == HELLO
    assert Hello.from_json(hello.to_json()) == hello


def test_a_hello_takes_defaults_and_numbers_as_int_did() -> None:
    hello = Hello.from_json({"node_id": "A", "mesh": "m1", "mesh_port": "4242"})
    assert (hello.aet, hello.dicom_port, hello.roster_digest, hello.peers) == ("", 0, "", ())
    assert hello.mesh_port == 4242


def test_peers_a_hello_cannot_read_are_skipped_alone() -> None:
    broken = [None, "x", {"node_id": "C"}, {**PEER, "mesh_port": "no"},
              {**PEER, "addresses": "10.0.0.3"}, {**PEER, "addresses": [1]}]
    hello = Hello.from_json({**HELLO, "peers": [*broken, PEER]})
    assert [p.node_id for p in hello.peers] == ["B"]


@pytest.mark.parametrize("data", [
    *NOT_OBJECTS,
    _without(HELLO, "node_id"), _without(HELLO, "mesh"), _without(HELLO, "mesh_port"),
    {**HELLO, "node_id": 7}, {**HELLO, "mesh": None}, {**HELLO, "aet": ["A"]},
    {**HELLO, "mesh_port": "port"}, {**HELLO, "mesh_port": None},
    {**HELLO, "mesh_port": float("inf")}, {**HELLO, "dicom_port": {}},
    {**HELLO, "roster": 1}, {**HELLO, "peers": {"node_id": "B"}}, {**HELLO, "peers": 3},
])
def test_a_malformed_hello_raises_remote_answer_invalid_only(data: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid, match="not a PACSmesh hello"):
        Hello.from_json(data)


@pytest.mark.parametrize("data", [
    *NOT_OBJECTS, _without(PEER, "node_id"), _without(PEER, "mesh_port"),
    {**PEER, "addresses": None}, {**PEER, "addresses": "10.0.0.2"},
    {**PEER, "addresses": [None]}, {**PEER, "aet": 1}, {**PEER, "dicom_port": "x"},
])
def test_a_malformed_peer_raises_remote_answer_invalid_only(data: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        PeerInfo.from_json(data)


def test_a_peer_without_addresses_has_none() -> None:
    assert PeerInfo.from_json(_without(PEER, "addresses")).addresses == ()


def test_an_introduction_parses_from_a_query_and_round_trips() -> None:
    them = Introduction.from_query({"node_id": "A", "aet": "A_AE", "mesh_port": "4242",
                                    "dicom_port": "11112"})
    assert them == Introduction("A", 4242, "A_AE", 11112)
    assert Introduction.from_query(them.to_query()) == them
    assert Introduction.from_query({"node_id": "A", "mesh_port": "1"}).dicom_port == 0


@pytest.mark.parametrize("query", [
    {}, {"node_id": "A"}, {"mesh_port": "1"}, {"node_id": "A", "mesh_port": "x"},
    {"node_id": "A", "mesh_port": "1", "dicom_port": "x"},
])
def test_a_malformed_introduction_raises_remote_answer_invalid_only(
    query: dict[str, str],
) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        Introduction.from_query(query)


def test_a_roster_page_parses_into_the_roster_it_carries() -> None:
    page = RosterPage.from_json(ROSTER)
    assert page.to_json() == ROSTER
    roster = page.roster()
    assert (roster.mesh_id, roster.admin_key, roster.entries) == ("mesh-1", "key", [ENTRY])
    assert roster.entries[0] is not ENTRY  # the page's entries are not shared with it
    assert RosterPage.of(Roster("m", "k", [ENTRY])).to_json() == Roster(
        "m", "k", [ENTRY]).to_json()
    assert RosterPage.from_json(_without(ROSTER, "entries")).entries == ()


@pytest.mark.parametrize("data", [
    *NOT_OBJECTS, _without(ROSTER, "mesh"), _without(ROSTER, "admin"),
    {**ROSTER, "mesh": 1}, {**ROSTER, "admin": None}, {**ROSTER, "entries": "x"},
    {**ROSTER, "entries": {"a": 1}}, {**ROSTER, "entries": [ENTRY, 1]},
    {**ROSTER, "entries": [["kind", "founder"]]},
])
def test_a_malformed_roster_page_raises_remote_answer_invalid_only(data: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid, match="not a roster"):
        RosterPage.from_json(data)


def test_a_join_request_parses_and_round_trips() -> None:
    join = JoinRequest.from_json(JOIN)
    assert join == JoinRequest("pacsmesh-invite-1.x.y", "C_AE", "PEM", b"sig")
    assert join.to_json() == JOIN


@pytest.mark.parametrize("data", [
    *NOT_OBJECTS, *(_without(JOIN, key) for key in JOIN),
    {**JOIN, "token": 1}, {**JOIN, "aet": None}, {**JOIN, "cert": []},
    {**JOIN, "proof": 5}, {**JOIN, "proof": "not base64!"}, {**JOIN, "proof": "é"},
])
def test_a_malformed_join_request_raises_remote_answer_invalid_only(data: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid, match="not a join request"):
        JoinRequest.from_json(data)


def test_a_join_reply_parses_and_round_trips() -> None:
    reply = JoinReply.from_json({"roster": ROSTER})
    assert reply.roster == RosterPage.from_json(ROSTER)
    assert reply.to_json() == {"roster": ROSTER}


@pytest.mark.parametrize("data", [
    *NOT_OBJECTS, {}, {"roster": None}, {"roster": "x"}, {"roster": _without(ROSTER, "mesh")},
])
def test_a_malformed_join_reply_raises_remote_answer_invalid_only(data: Any) -> None:
    with pytest.raises(RemoteAnswerInvalid):
        JoinReply.from_json(data)


def test_remote_answer_invalid_is_a_remote_failure_and_a_value_error() -> None:
    assert issubclass(RemoteAnswerInvalid, RemoteDiscoveryError)
    assert issubclass(RemoteAnswerInvalid, ValueError)
