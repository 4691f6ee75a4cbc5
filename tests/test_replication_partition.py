"""A partitioned mesh: both sides keep storing; after healing, both sides' studies sit on
their owners. Two sites in network namespaces joined by one link that is cut and healed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from replication.placement import owners
from tests.netns import NamespacedNode, Network, init_mesh, invite, netns_available, wait_for
from tests.support import one_file_per_instance, transfer_syntax

pytestmark = pytest.mark.skipif(
    netns_available() is not None, reason=f"multi-host tests: {netns_available()}"
)


def _held(node: NamespacedNode) -> set[str]:
    return {p.stem for p in (node.data_dir / "objects").rglob("*.dcm")}


def _alive(node: NamespacedNode) -> set[str]:
    return {aet for aet, p in node.peers().items() if p["state"] == "alive"}


@pytest.fixture
def network() -> Iterator[Network]:
    with Network() as net:
        yield net


def test_partitioned_sides_converge_after_healing(network: Network, tmp_path: Path) -> None:
    site_b = network.add_segment()
    hosts = [network.add_host("a1"), network.add_host("a2"),
             network.add_host("b1", site_b), network.add_host("b2", site_b)]
    init_mesh(tmp_path / "n1", "N1")
    token = invite(tmp_path / "n1", f"{hosts[0].address}:11113", uses=3)
    nodes = [
        NamespacedNode(h, tmp_path / f"n{i}", f"N{i}", () if i == 1 else ("--join", token))
        for i, h in enumerate(hosts, start=1)
    ]
    try:
        for node in nodes:
            node.start()
        everyone = {n.aet for n in nodes}
        wait_for(lambda: all(_alive(n) == everyone - {n.aet} for n in nodes), 40)
        ids = {n.get_json("/api/mesh")["node_id"]: n for n in nodes}

        network.cut_segment(site_b)
        wait_for(lambda: _alive(nodes[0]) == {"N2"} and _alive(nodes[2]) == {"N4"}, 30)
        # Uncompressed samples: storescu proposes them without per-syntax options.
        plain = [p for p in one_file_per_instance()
                 if transfer_syntax(p) in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")]
        for node, files in ((nodes[0], plain[:6]), (nodes[2], plain[6:12])):
            # Each side keeps taking studies while cut off from the other.
            result = node.host.run("storescu", "-R", "-aec", node.aet, "127.0.0.1", "11112",
                                   *map(str, files), timeout=120)
            assert result.returncode == 0, result.stderr
        network.heal_segment(site_b)

        study_of: dict[str, str] = {}
        for node in (nodes[0], nodes[2]):
            for path in (node.data_dir / "objects").rglob("*.dcm"):
                study_of[path.stem] = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)

        def converged() -> bool:
            return all(
                sha in _held(ids[owner])
                for sha, study in study_of.items() for owner in owners(study, list(ids), 2)
            )

        wait_for(converged, 120)
        for node in nodes:
            assert node.get_json("/api/status")["instances"] == len(_held(node))
    finally:
        for node in nodes:
            node.stop()
