"""Invite tokens and the signed roster, without a network."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from discovery.invite import (
    InviteError,
    b64,
    canonical,
    check_invite,
    make_invite,
    parse_invite,
    unb64,
)
from discovery.roster import Roster, RosterError
from node.identity import NodeIdentity, load_or_create_identity

NOW = 1_800_000_000.0


@pytest.fixture
def nodes(tmp_path: Path) -> list[NodeIdentity]:
    return [load_or_create_identity(tmp_path / f"n{i}") for i in range(4)]


@pytest.fixture
def admin() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _mesh(admin: Ed25519PrivateKey, founder: NodeIdentity) -> Roster:
    return Roster.create("mesh-1", admin, founder.cert_pem.decode(), "FOUNDER", NOW)


def test_invite_is_one_line_and_verifies(admin: Ed25519PrivateKey) -> None:
    token = make_invite(admin, "mesh-1", NOW + 3600, uses=2, seeds=("10.0.0.1:11113",))
    assert "\n" not in token and " " not in token
    invite = check_invite(token, "mesh-1", parse_invite(token).admin_key, NOW)
    assert invite.uses == 2 and invite.seeds == ("10.0.0.1:11113",)


def test_forged_expired_and_foreign_invites_are_refused(admin: Ed25519PrivateKey) -> None:
    token = make_invite(admin, "mesh-1", NOW + 60, uses=1)
    key = parse_invite(token).admin_key
    prefix, body, sig = token.split(".")
    more_uses = canonical(dict(json.loads(unb64(body)), uses=1000))
    with pytest.raises(InviteError, match="signature"):
        parse_invite(f"{prefix}.{b64(more_uses)}.{sig}")
    with pytest.raises(InviteError, match="expired"):
        check_invite(token, "mesh-1", key, NOW + 61)
    with pytest.raises(InviteError, match="another mesh"):
        check_invite(token, "mesh-2", key, NOW)
    other = make_invite(Ed25519PrivateKey.generate(), "mesh-1", NOW + 60, uses=1)
    with pytest.raises(InviteError, match="another mesh"):
        check_invite(other, "mesh-1", key, NOW)


def test_any_member_admits_with_a_valid_invite(admin, nodes) -> None:
    roster = _mesh(admin, nodes[0])
    token = make_invite(admin, "mesh-1", NOW + 3600, uses=5)
    founder_key = nodes[0].private_key()
    roster.admit(nodes[0].node_id, founder_key, nodes[1].cert_pem.decode(), "WS1", token, NOW + 1)
    # The new member admits the next one: the admin is not needed.
    roster.admit(nodes[1].node_id, nodes[1].private_key(), nodes[2].cert_pem.decode(), "WS2",
                 token, NOW + 2)
    view = roster.evaluate()
    assert set(view.members) == {n.node_id for n in nodes[:3]}
    assert view.members[nodes[2].node_id].admitted_by == nodes[1].node_id
    assert view.rejected == ()


def test_used_up_and_expired_invites_admit_no_one(admin, nodes) -> None:
    roster = _mesh(admin, nodes[0])
    once = make_invite(admin, "mesh-1", NOW + 3600, uses=1)
    key = nodes[0].private_key()
    roster.admit(nodes[0].node_id, key, nodes[1].cert_pem.decode(), "WS1", once, NOW + 1)
    with pytest.raises(InviteError, match="no uses left"):
        roster.admit(nodes[0].node_id, key, nodes[2].cert_pem.decode(), "WS2", once, NOW + 2)
    late = make_invite(admin, "mesh-1", NOW + 10, uses=3)
    with pytest.raises(InviteError, match="expired"):
        roster.admit(nodes[0].node_id, key, nodes[2].cert_pem.decode(), "WS2", late, NOW + 11)
    assert set(roster.evaluate().members) == {nodes[0].node_id, nodes[1].node_id}


def test_concurrent_admissions_beyond_the_uses_agree_everywhere(admin, nodes) -> None:
    """Two members admit with a single-use token during a partition: after merging,
    every node keeps the same one admission."""
    base = _mesh(admin, nodes[0])
    token = make_invite(admin, "mesh-1", NOW + 3600, uses=5)
    base.admit(nodes[0].node_id, nodes[0].private_key(), nodes[1].cert_pem.decode(), "WS1",
               token, NOW + 1)
    once = make_invite(admin, "mesh-1", NOW + 3600, uses=1)
    side_a, side_b = copy.deepcopy(base), copy.deepcopy(base)
    side_a.admit(nodes[0].node_id, nodes[0].private_key(), nodes[2].cert_pem.decode(), "A",
                 once, NOW + 5)
    side_b.admit(nodes[1].node_id, nodes[1].private_key(), nodes[3].cert_pem.decode(), "B",
                 once, NOW + 6)
    side_a.merge(side_b.entries)
    side_b.merge(side_a.entries)
    assert side_a.evaluate().members.keys() == side_b.evaluate().members.keys()
    assert nodes[2].node_id in side_a.evaluate().members
    assert nodes[3].node_id not in side_a.evaluate().members
    assert side_a.evaluate().digest == side_b.evaluate().digest


def test_revoked_node_is_out_and_cannot_admit(admin, nodes) -> None:
    roster = _mesh(admin, nodes[0])
    token = make_invite(admin, "mesh-1", NOW + 3600, uses=5)
    roster.admit(nodes[0].node_id, nodes[0].private_key(), nodes[1].cert_pem.decode(), "WS1",
                 token, NOW + 1)
    roster.revoke(admin, nodes[1].node_id, NOW + 2)
    assert not roster.evaluate().is_member(nodes[1].node_id)
    with pytest.raises(RosterError):
        roster.admit(nodes[1].node_id, nodes[1].private_key(), nodes[2].cert_pem.decode(),
                     "WS2", token, NOW + 3)
    with pytest.raises(RosterError, match="revoked"):
        roster.admit(nodes[0].node_id, nodes[0].private_key(), nodes[1].cert_pem.decode(),
                     "WS1", token, NOW + 4)
    with pytest.raises(RosterError, match="not the admin key"):
        roster.revoke(Ed25519PrivateKey.generate(), nodes[0].node_id, NOW + 5)


def test_tampered_and_forged_entries_are_ignored_and_reported(admin, nodes) -> None:
    roster = _mesh(admin, nodes[0])
    token = make_invite(admin, "mesh-1", NOW + 3600, uses=5)
    entry = roster.admit(nodes[0].node_id, nodes[0].private_key(),
                         nodes[1].cert_pem.decode(), "WS1", token, NOW + 1)
    tampered = Roster.from_json(copy.deepcopy(roster.to_json()))
    tampered.entries[1]["aet"] = "EVIL"
    view = tampered.evaluate()
    assert nodes[1].node_id not in view.members and len(view.rejected) == 1
    # A member entry claiming node 2's id with node 3's certificate.
    forged = dict(entry, node_id=nodes[2].node_id, cert=nodes[3].cert_pem.decode())
    roster.merge([forged])
    assert nodes[2].node_id not in roster.evaluate().members
    # A revocation not signed by the admin changes nothing.
    fake = {"kind": "revoke", "node_id": nodes[0].node_id, "at": NOW + 9, "by": "admin",
            "sig": entry["sig"]}
    roster.merge([dict(fake, sig="AAAA")])
    assert roster.evaluate().is_member(nodes[0].node_id)


def test_a_title_a_member_holds_is_refused_at_admission(admin, nodes) -> None:
    roster = _mesh(admin, nodes[0])
    token = make_invite(admin, "mesh-1", NOW + 3600, uses=5)
    key = nodes[0].private_key()
    roster.admit(nodes[0].node_id, key, nodes[1].cert_pem.decode(), "WS1", token, NOW + 1)
    for taken in ("WS1", "FOUNDER", " WS1 "):
        with pytest.raises(RosterError, match=r"AE title .* is already held by member"):
            roster.admit(nodes[0].node_id, key, nodes[2].cert_pem.decode(), taken, token,
                         NOW + 2)
    # Re-joining with its own node id and title is no duplicate.
    again = roster.admit(nodes[0].node_id, key, nodes[1].cert_pem.decode(), "WS1", token,
                         NOW + 3)
    assert again["node_id"] == nodes[1].node_id
    assert sorted(m.aet for m in roster.evaluate().members.values()) == ["FOUNDER", "WS1"]
    # A revoked member's title is free again.
    roster.revoke(admin, nodes[1].node_id, NOW + 4)
    roster.admit(nodes[0].node_id, key, nodes[2].cert_pem.decode(), "WS1", token, NOW + 5)
    assert sorted(m.aet for m in roster.evaluate().members.values()) == ["FOUNDER", "WS1"]


def test_one_title_admitted_at_two_members_at_once_goes_to_the_earlier(admin, nodes) -> None:
    """During a partition two members each admit a node as WS2: once the rosters meet,
    every node keeps the earlier admission and reports the other."""
    base = _mesh(admin, nodes[0])
    token = make_invite(admin, "mesh-1", NOW + 3600, uses=5)
    base.admit(nodes[0].node_id, nodes[0].private_key(), nodes[1].cert_pem.decode(), "WS1",
               token, NOW + 1)
    side_a, side_b = copy.deepcopy(base), copy.deepcopy(base)
    side_a.admit(nodes[0].node_id, nodes[0].private_key(), nodes[2].cert_pem.decode(), "WS2",
                 token, NOW + 6)
    side_b.admit(nodes[1].node_id, nodes[1].private_key(), nodes[3].cert_pem.decode(), "WS2",
                 token, NOW + 5)
    side_a.merge(side_b.entries)
    side_b.merge(side_a.entries)
    view_a, view_b = side_a.evaluate(), side_b.evaluate()
    assert view_a.digest == view_b.digest
    assert nodes[3].node_id in view_a.members and nodes[2].node_id not in view_a.members
    assert [m.aet for m in view_a.members.values()].count("WS2") == 1
    assert any("AE title 'WS2' is already held" in why for _, why in view_a.rejected)
    # A title revoked later than the second admission was free for it everywhere.
    side_a.revoke(admin, nodes[3].node_id, NOW + 9)
    assert nodes[2].node_id in side_a.evaluate().members
