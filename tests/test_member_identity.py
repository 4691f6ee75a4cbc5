"""A mesh member's AE title counts only from that member (issue 21): real hosts in network
namespaces, DCMTK getscu claiming the member's title from elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from tests.mesh_support import invite as loopback_invite
from tests.mesh_support import joiner, peer_states
from tests.mesh_support import wait_for as mesh_wait
from tests.netns import Host, NamespacedNode, Network, init_mesh, invite, netns_available, wait_for
from tests.support import (
    DCMTK_TIMEOUTS,
    NodeProcess,
    dataset_bytes,
    received_files,
    sop_instance_uid,
)

needs_netns = pytest.mark.skipif(
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


@needs_netns
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


def _c_get_as(node: NodeProcess, aet: str, source: str) -> tuple[bool, list[bytes]]:
    """C-GET CT_small from ``node`` calling as ``aet`` from the address ``source``."""
    received: list[bytes] = []

    def on_store(event: Event) -> int:
        received.append(event.request.DataSet.getvalue())
        return 0

    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet,
                         bind_address=(source, 0),
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if not assoc.is_established:
        return False, received
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = query.SeriesInstanceUID = ""
    query.SOPInstanceUID = sop_instance_uid(SAMPLE)
    statuses = [int(s.Status) for s, _ in assoc.send_c_get(
        query, StudyRootQueryRetrieveInformationModelGet) if s]
    assoc.release()
    return statuses[-1:] == [0], received


def test_a_member_title_from_another_loopback_address_is_refused(founder, make_node) -> None:
    """The same on one machine: members live at 127.0.0.1, the impostor binds 127.0.0.9."""
    member = joiner(make_node, founder, "nodeb", loopback_invite(founder)).start()
    mesh_wait(lambda: _loopback_alive(founder, "NODEB"), 30)
    ok, got = _c_get_as(founder, "NODEB", "127.0.0.9")
    assert not ok and got == []
    ok, got = _c_get_as(founder, "NODEB", "127.0.0.1")
    assert ok and len(got) == 1
    objects = list((founder.data_dir / "objects").rglob("*.dcm"))
    assert len(objects) == 1
    assert got[0] == dataset_bytes(objects[0])
    assert "a mesh member's AE title from an address not known for that member" in founder.log()
    assert member.proc is not None and member.proc.poll() is None


def _loopback_alive(node: NodeProcess, aet: str) -> bool:
    return peer_states(node).get(aet) == "alive"
