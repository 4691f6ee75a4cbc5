"""Copies owed to a member that is revoked while it is away: A's rows for it can never be
sent, so they must not hold A's count above zero for ever; the studies go to today's owners
instead, and the count reaches zero only once those owners hold them."""

from __future__ import annotations

from pathlib import Path

from replication.placement import owners
from tests.mesh_support import cli, mesh_view, peer_states, wait_for
from tests.support import storescu
from tests.test_faults import _uid, make_ct
from tests.test_replication_holders import _held, _intact, three_settled_members

STUDIES = 8


def test_copies_owed_to_a_revoked_member_go_to_the_owners_that_remain(
    make_node, tmp_path: Path
) -> None:
    nodes, id_of = three_settled_members(make_node)
    a, b, c = nodes
    ids = list(id_of.values())
    c.stop()
    wait_for(lambda: peer_states(a).get("NODEC") == "dead", 40)
    # Studies A and C own: A's copies for C wait in its outbox, B holds none of its own.
    numbers = [n for n in range(1, 400)
               if set(owners(_uid(1, n), ids, 2))
               == {id_of["NODEA"], id_of["NODEC"]}][:STUDIES]
    files = [make_ct(tmp_path / f"{n}.dcm", n, 0, size=1400, noise=True) for n in numbers]
    before = _held(a)
    assert storescu(a, files) == []
    shas = _held(a) - before
    assert len(shas) == STUDIES
    wait_for(lambda: a.status()["under_replicated"] >= STUDIES, 30)

    result = cli("mesh", "revoke", "--data-dir", str(a.data_dir), id_of["NODEC"].lower())
    assert result.returncode == 0, result.stderr
    wait_for(lambda: id_of["NODEC"] in mesh_view(a)["revoked"]
             and id_of["NODEC"] in mesh_view(b)["revoked"], 40)
    # With two members and R = 2 both own every study: "replicated" is true only once B
    # holds each one, which is checked against B's own files, not A's word.
    early: list[int] = []

    def replicated() -> bool:
        status = a.status()
        done = status["under_replicated"] == 0 and status["outbox_depth"] == 0
        if done and not shas <= _held(b):
            early.append(len(shas - _held(b)))
        return done

    wait_for(replicated, 90, interval=0.05)
    assert early == [], f"0 under-replicated while B lacked {early} instances"
    assert shas <= _held(b)
    for node in (a, b):
        assert node.status()["instances"] == len(_held(node))
        assert _intact(node)
