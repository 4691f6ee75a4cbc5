"""Discovery across real hosts: nodes in network namespaces on one bridge, real multicast.

Each test builds its own namespaces and removes them, whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.netns import NamespacedNode, Network, init_mesh, invite, netns_available, wait_for

pytestmark = pytest.mark.skipif(
    netns_available() is not None, reason=f"multi-host tests: {netns_available()}"
)

# Liveness defaults: dead 6 s after the last answered probe; allow for the probe cadence.
DEAD_WITHIN = 12.0
FOUND_WITHIN = 20.0  # includes Python start-up of the node processes


@pytest.fixture
def network() -> Iterator[Network]:
    with Network() as net:
        yield net


@pytest.fixture
def make_nodes(network: Network, tmp_path: Path) -> Iterator[Callable[..., list[NamespacedNode]]]:
    """Nodes of one mesh: the first creates it, the others join with an invite token that
    names the first as seed (unless ``token`` is given)."""
    started: list[NamespacedNode] = []
    tokens: list[str] = []

    def make(count: int, *extra: str, token: str | None = None) -> list[NamespacedNode]:
        nodes = []
        for _ in range(count):
            index = len(network.hosts) + 1
            host = network.add_host(f"host{index}")
            data_dir = tmp_path / f"node{index}"
            if index == 1:
                init_mesh(data_dir, f"NODE{index}")
                tokens.append(invite(data_dir, f"{host.address}:11113"))
                args = extra
            else:
                args = (*extra, "--join", token or tokens[0])
            node = NamespacedNode(host, data_dir, f"NODE{index}", args)
            nodes.append(node.start())
        started.extend(nodes)
        return nodes

    yield make
    for node in started:
        node.stop()


def _states(node: NamespacedNode) -> dict[str, str]:
    return {aet: p["state"] for aet, p in node.peers().items()}


def _all_alive(nodes: list[NamespacedNode]) -> bool:
    for node in nodes:
        others = {n.aet for n in nodes if n is not node}
        states = _states(node)
        if any(states.get(aet) != "alive" for aet in others):
            return False
    return True


def test_nodes_find_each_other_and_a_late_node(make_nodes) -> None:
    nodes = make_nodes(3)
    wait_for(lambda: _all_alive(nodes), FOUND_WITHIN)
    late = make_nodes(1)
    wait_for(lambda: _all_alive(nodes + late), FOUND_WITHIN)
    entry = nodes[0].peers()[late[0].aet]
    assert entry["addresses"][0] == late[0].host.address
    assert entry["dicom_port"] == 11112 and "mdns" in entry["sources"]


def test_killed_node_is_dead_on_all_others_within_liveness_timeout(make_nodes) -> None:
    nodes = make_nodes(3)
    wait_for(lambda: _all_alive(nodes), FOUND_WITHIN)
    victim, survivors = nodes[0], nodes[1:]
    victim.kill()
    wait_for(lambda: all(_states(n)[victim.aet] == "dead" for n in survivors), DEAD_WITHIN)
    assert all(_states(n)[survivors[0].aet] == "alive" for n in survivors[1:])


def test_cut_link_is_dead_then_alive_again_when_restored(make_nodes) -> None:
    nodes = make_nodes(3)
    wait_for(lambda: _all_alive(nodes), FOUND_WITHIN)
    cut, others = nodes[2], nodes[:2]
    cut.host.link_down()
    wait_for(lambda: all(_states(n)[cut.aet] == "dead" for n in others), DEAD_WITHIN)
    # The cut-off node keeps running on its own and sees the others dead.
    wait_for(lambda: all(s == "dead" for s in _states(cut).values()), DEAD_WITHIN)
    cut.host.link_up()
    # Dead peers are re-probed every few seconds; recovery needs no restart.
    wait_for(lambda: _all_alive(nodes), FOUND_WITHIN)


def test_changed_address_is_followed(make_nodes) -> None:
    nodes = make_nodes(3)
    wait_for(lambda: _all_alive(nodes), FOUND_WITHIN)
    moving = nodes[1]
    old = moving.host.address
    new = old.rsplit(".", 1)[0] + ".77"
    moving.host.change_address(new)  # as a DHCP renewal would

    def followed() -> bool:
        return all(
            n.peers()[moving.aet]["addresses"][0] == new
            and n.peers()[moving.aet]["state"] == "alive"
            for n in nodes if n is not moving
        )

    wait_for(followed, FOUND_WITHIN)


def test_node_with_one_static_peer_and_no_multicast_learns_every_member(
    make_nodes, network: Network
) -> None:
    members = make_nodes(3)
    wait_for(lambda: _all_alive(members), FOUND_WITHIN)
    # An invite without seed addresses: the one --peer is all the loner has.
    bare = invite(members[0].data_dir)
    loner = make_nodes(1, "--no-mdns", "--peer", f"{members[0].host.address}:11113",
                       token=bare)[0]
    wait_for(lambda: all(_states(loner).get(m.aet) == "alive" for m in members), FOUND_WITHIN)
    # and the members learn of it too (it introduced itself to the one it probed).
    wait_for(lambda: all(_states(m).get(loner.aet) == "alive" for m in members), FOUND_WITHIN)


def test_restarted_node_recontacts_its_peers_without_multicast(make_nodes) -> None:
    nodes = make_nodes(3)
    wait_for(lambda: _all_alive(nodes), FOUND_WITHIN)
    restarted = nodes[0]
    restarted.stop()
    # Back without mDNS and without --peer: only the persisted addresses can lead it.
    restarted.extra = (*restarted.extra, "--no-mdns")
    restarted.start()
    wait_for(lambda: all(s == "alive" for s in _states(restarted).values())
             and len(_states(restarted)) == 2, FOUND_WITHIN)


def test_two_nodes_with_one_aet_get_a_warning(make_nodes, network: Network) -> None:
    nodes = make_nodes(2)
    # A member renamed: a node that is not yet one is refused the taken title at its join.
    wait_for(lambda: _all_alive(nodes), FOUND_WITHIN)
    nodes[1].stop()
    nodes[1].aet = nodes[0].aet
    nodes[1].start()
    wait_for(lambda: all("also uses AE title" in n.log() for n in nodes), FOUND_WITHIN)
    # The clash is resolved by renaming a DICOM record (<AET> (<node id prefix>)).
    wait_for(lambda: any("DICOM record renamed" in n.log() for n in nodes), FOUND_WITHIN)


def test_node_joins_through_mdns_with_a_token_without_addresses(make_nodes) -> None:
    members = make_nodes(2)
    wait_for(lambda: _all_alive(members), FOUND_WITHIN)
    bare = invite(members[0].data_dir)  # no seed addresses: only mDNS can lead the way
    late = make_nodes(1, token=bare)
    wait_for(lambda: _all_alive(members + late), FOUND_WITHIN)
    assert "joined mesh" in late[0].log()
