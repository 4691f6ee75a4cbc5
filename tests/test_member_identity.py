"""A mesh member's AE title counts only from that member (issue 21): real hosts in network
namespaces, DCMTK getscu claiming the member's title from elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tests.netns import Host, NamespacedNode, Network, init_mesh, invite, netns_available, wait_for
from tests.support import DCMTK_TIMEOUTS, dataset_bytes, received_files, sop_instance_uid

pytestmark = pytest.mark.skipif(
    netns_available() is not None, reason=f"multi-host tests: {netns_available()}"
)
SAMPLE = Path(get_testdata_file("CT_small.dcm"))


@pytest.fixture
def network() -> Iterator[Network]:
    with Network() as net:
        yield net


def _getscu(host: Host, aet: str, node: NamespacedNode, out: Path) -> tuple[int, str]:
    out.mkdir(parents=True, exist_ok=True)
    result = host.run(
        "getscu", *DCMTK_TIMEOUTS, "-S", "+B", "-aet", aet, "-aec", node.aet, "-od", str(out),
        "-k", "QueryRetrieveLevel=IMAGE", "-k", f"SOPInstanceUID={sop_instance_uid(SAMPLE)}",
        "-k", "StudyInstanceUID", "-k", "SeriesInstanceUID",
        node.host.address, str(node.dicom_port), timeout=120,
    )
    return result.returncode, result.stderr


def _alive(node: NamespacedNode, aet: str) -> bool:
    return node.peers().get(aet, {}).get("state") == "alive"


def test_a_member_title_from_elsewhere_is_refused(network: Network, tmp_path: Path) -> None:
    host1, host2, stranger = (network.add_host(f"host{i}") for i in (1, 2, 3))
    init_mesh(tmp_path / "node1", "NODE1")
    token = invite(tmp_path / "node1", f"{host1.address}:11113")
    node1 = NamespacedNode(host1, tmp_path / "node1", "NODE1").start()
    node2 = NamespacedNode(host2, tmp_path / "node2", "NODE2", ("--join", token)).start()
    try:
        wait_for(lambda: _alive(node1, "NODE2") and _alive(node2, "NODE1"), 60)
        stored = host1.run("storescu", *DCMTK_TIMEOUTS, "-aec", "NODE1", "127.0.0.1", "11112",
                           str(SAMPLE))
        assert stored.returncode == 0, stored.stderr

        code, err = _getscu(stranger, "NODE2", node1, tmp_path / "stolen")
        assert code != 0 and not list((tmp_path / "stolen").iterdir()), err
        assert "Rejected" in err or "rejected" in err, err

        code, err = _getscu(host2, "NODE2", node1, tmp_path / "member")
        assert code == 0, err
        got = received_files(tmp_path / "member")
        assert list(got) == [sop_instance_uid(SAMPLE)]
    finally:
        node2.stop()
        node1.stop()
    # Nothing lost: the one instance is stored once and served as stored, bit for bit.
    objects = [p for p in (tmp_path / "node1" / "objects").rglob("*.dcm")]
    assert len(objects) == 1
    assert dataset_bytes(got[sop_instance_uid(SAMPLE)]) == dataset_bytes(objects[0])
    log = node1.log()
    assert "a mesh member's AE title from an address not known for that member" in log
    assert stranger.address in log
