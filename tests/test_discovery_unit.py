"""Discovery without a network: record encoding, and peer states driven by a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from discovery.mdns import Announcement, MdnsAgent
from discovery.peers import Liveness, PeerState, PeerTable
from discovery.records import (
    DicomRecord,
    MeshRecord,
    RecordError,
    decode_dicom,
    decode_mesh,
    dicom_instance_name,
    loses_aet_tie,
    mesh_hash,
)

NODE_A = "a" * 32
NODE_B = "b" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _encoded(props: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in props.items()}


def test_mesh_record_round_trips_through_txt() -> None:
    record = MeshRecord(
        NODE_A, mesh_hash("hospital"), 8080, 11112, "CT_ROOM", addresses=("10.0.0.5",)
    )
    decoded = decode_mesh(_encoded(record.properties()), ("10.0.0.5",))
    assert decoded == record


def test_mesh_record_carries_no_mesh_id_and_no_patient_data() -> None:
    props = MeshRecord(NODE_A, mesh_hash("St Mary secret mesh"), 8080, 11112, "WS1").properties()
    assert set(props) == {"txtvers", "id", "mesh", "proto", "port", "dicom", "aet"}
    assert "St Mary" not in "".join(props.values())


@pytest.mark.parametrize("broken", [
    {"txtvers": "2"},
    {"id": "x"},
    {"port": "0"},
    {"port": "eighty"},
    {"proto": ""},
])
def test_malformed_mesh_records_are_refused(broken: dict[str, str]) -> None:
    props = MeshRecord(NODE_A, mesh_hash("m"), 8080, 11112, "WS1").properties() | broken
    with pytest.raises(RecordError):
        decode_mesh(_encoded(props))


def test_dicom_record_follows_annex_h() -> None:
    record = DicomRecord("ARCHIVE1", "ARCHIVE", 11112)
    assert record.properties() == {
        "txtvers": "1", "AET": "ARCHIVE1", "PrimaryDeviceType": "ARCHIVE"
    }
    decoded = decode_dicom(_encoded(record.properties()), 11112, ("10.1.1.1",))
    assert decoded.aet == "ARCHIVE1" and decoded.addresses == ("10.1.1.1",)
    with pytest.raises(RecordError):
        decode_dicom({b"AET": b"A" * 17}, 104)


def test_aet_clash_renames_exactly_one_record_deterministically() -> None:
    assert loses_aet_tie(NODE_B, NODE_A) and not loses_aet_tie(NODE_A, NODE_B)
    assert dicom_instance_name("WS", NODE_B, renamed=False) == "WS._dicom._tcp.local."
    assert dicom_instance_name("WS", NODE_B, renamed=True) == "WS (bbbbbbb)._dicom._tcp.local."


def _table(clock: FakeClock) -> PeerTable:
    return PeerTable(NODE_A, clock, Liveness(suspect_after=3.0, dead_after=6.0))


def test_peer_is_alive_only_after_a_probe_answers() -> None:
    clock = FakeClock()
    table = _table(clock)
    table.hint(NODE_B, ["10.0.0.2"], 8080, "mdns", aet="WS2")
    assert table.peers[NODE_B].state is PeerState.UNKNOWN
    change = table.probe_succeeded(NODE_B, "10.0.0.2")
    assert change is not None and change.new is PeerState.ALIVE
    assert [p.aet for p in table.alive()] == ["WS2"]


def test_silent_peer_goes_suspect_then_dead_then_alive_again() -> None:
    clock = FakeClock()
    table = _table(clock)
    table.hint(NODE_B, ["10.0.0.2"], 8080, "mdns")
    table.probe_succeeded(NODE_B, "10.0.0.2")
    clock.advance(2.9)
    assert table.tick() == []
    clock.advance(0.2)
    assert [c.new for c in table.tick()] == [PeerState.SUSPECT]
    clock.advance(3.0)
    assert [c.new for c in table.tick()] == [PeerState.DEAD]
    # A later mDNS hint alone does not revive it; an answered probe does.
    table.hint(NODE_B, ["10.0.0.2"], 8080, "mdns")
    assert table.peers[NODE_B].state is PeerState.DEAD
    table.probe_succeeded(NODE_B, "10.0.0.2")
    assert table.peers[NODE_B].state is PeerState.ALIVE


def test_a_peer_state_records_since_when() -> None:
    clock = FakeClock()
    table = _table(clock)
    table.hint(NODE_B, ["10.0.0.2"], 8080, "mdns")
    assert table.peers[NODE_B].state_since == 1000.0
    clock.advance(1)
    table.probe_succeeded(NODE_B, "10.0.0.2")
    clock.advance(1)
    table.probe_succeeded(NODE_B, "10.0.0.2")  # still alive: since its first answer
    assert table.peers[NODE_B].state_since == 1001.0
    clock.advance(6)
    table.tick()
    assert (table.peers[NODE_B].state, table.peers[NODE_B].state_since) == (
        PeerState.DEAD, 1008.0)


def test_dead_peers_are_probed_less_often() -> None:
    clock = FakeClock()
    table = PeerTable(NODE_A, clock, Liveness(probe_interval=1.0, dead_probe_interval=5.0))
    table.hint(NODE_B, ["10.0.0.2"], 8080, "static")
    table.probe_started(NODE_B)
    clock.advance(10)
    table.tick()
    assert table.peers[NODE_B].state is PeerState.DEAD
    table.probe_started(NODE_B)
    clock.advance(1.5)
    assert table.due_for_probe() == []
    clock.advance(4)
    assert [p.node_id for p in table.due_for_probe()] == [NODE_B]


def test_new_address_is_tried_first_and_the_answering_one_kept_first() -> None:
    clock = FakeClock()
    table = _table(clock)
    table.hint(NODE_B, ["10.0.0.2"], 8080, "mdns")
    table.hint(NODE_B, ["10.0.0.9"], 8080, "mdns")  # DHCP gave it a new address
    assert table.peers[NODE_B].addresses == ("10.0.0.9", "10.0.0.2")
    table.probe_succeeded(NODE_B, "10.0.0.9")
    table.forget_address(NODE_B, "10.0.0.2")
    assert table.peers[NODE_B].addresses == ("10.0.0.9",)


def test_own_records_are_ignored() -> None:
    table = _table(FakeClock())
    assert table.hint(NODE_A, ["10.0.0.1"], 8080, "mdns") is None
    assert table.peers == {}


async def test_two_agents_find_each_other_over_loopback_multicast() -> None:
    """Real zeroconf, bound to loopback only: each hears the other's mesh record."""
    heard: dict[str, list[MeshRecord]] = {NODE_A: [], NODE_B: []}
    agents = []
    for node_id, port in ((NODE_A, 18080), (NODE_B, 18081)):
        announcement = Announcement(
            dicom=DicomRecord(f"WS{port}", "WSD", port + 100, ("127.0.0.1",)),
            mesh=MeshRecord(node_id, mesh_hash("t"), port, port + 100, f"WS{port}",
                            addresses=("127.0.0.1",)),
        )
        agents.append(MdnsAgent(
            announcement, heard[node_id].append, lambda name, rec: None, lambda name: None,
        ))
    try:
        for agent in agents:
            await agent.start()
        for _ in range(100):
            if heard[NODE_A] and heard[NODE_B]:
                break
            await asyncio.sleep(0.1)
    finally:
        for agent in agents:
            await agent.stop()
    assert {r.node_id for r in heard[NODE_A]} == {NODE_B}
    assert {r.node_id for r in heard[NODE_B]} == {NODE_A}
    assert heard[NODE_A][0].mesh_port == 18081 and heard[NODE_A][0].aet == "WS18081"
