"""Patient events across a partition (IHE PIR), with real node processes in network
namespaces on one bridge (tests/netns.py): C's link is cut with ``ip link set DEV down``
(no reset, no refusal, just silence), ADT goes to a node over real MLLP with python-hl7's
client, the link comes back, and DCMTK findscu/getscu at each node show what a viewer
there would see.

Every node runs with ``--replicas 3``: each holds every study, so C-GET at C answers from
C's own files (never rewritten: each one's SHA-256 stays its name).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest
from pydicom import dcmread

from tests.hl7_support import ack_code, adt, trauma_study
from tests.netns import NamespacedNode, Network, init_mesh, invite, netns_available, wait_for
from tests.support import DCMTK_TIMEOUTS

pytestmark = pytest.mark.skipif(
    netns_available() is not None, reason=f"multi-host tests: {netns_available()}"
)
HL7_PORT = 2575
# Generous: on a loaded 2-core machine a node sees a healed peer again within seconds,
# and pulls its patient events every TOMBSTONE_INTERVAL (2 s) once it does.
HEALED_BOUND = 90.0

# python-hl7's blocking MLLP client, run inside a host's namespace: one connection,
# the messages in argv, the acknowledgements (MLLP frame stripped) a JSON list.
_HIS = r"""
import json, sys
from hl7.client import MLLPClient
client = MLLPClient("127.0.0.1", int(sys.argv[1]))
client.socket.settimeout(30)
try:
    print(json.dumps([client.send_message(m).strip(b"\x0b\x1c\r").decode("latin-1")
                      for m in sys.argv[2:]]))
finally:
    client.close()
"""


@pytest.fixture
def network() -> Iterator[Network]:
    with Network() as net:
        yield net


def _send(node: NamespacedNode, *messages: str) -> list[hl7.Message]:
    """Send ADT to ``node``'s HL7 port from inside its namespace; the acknowledgements."""
    result = node.host.run(sys.executable, "-c", _HIS, str(HL7_PORT), *messages, timeout=60)
    assert result.returncode == 0, result.stderr
    acks = [hl7.parse(ack) for ack in json.loads(result.stdout)]
    assert len(acks) == len(messages), result.stdout
    return acks


def _find(node: NamespacedNode, out: Path, **keys: str) -> list[tuple[str, str]]:
    """C-FIND at STUDY level with DCMTK findscu from inside the node's namespace:
    (PatientID, PatientName) of each answer, sorted."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    args = ["-S", "-aec", node.aet, "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
            "-k", "StudyInstanceUID"]
    for key in ("PatientID", "PatientName"):
        args += ["-k", f"{key}={keys[key]}" if key in keys else key]
    result = node.host.run("findscu", *DCMTK_TIMEOUTS, *args, "127.0.0.1",
                           str(node.dicom_port), timeout=90)
    if result.returncode != 0:  # polled: a failed query is a "not yet", with its reason
        raise ValueError(f"findscu at {node.aet}: {result.stderr.strip()[-500:]}")
    found = [dcmread(p) for p in out.iterdir()]
    return sorted((str(d.PatientID), str(d.PatientName)) for d in found)


def _get(node: NamespacedNode, out: Path, patient_id: str) -> list:
    """C-GET of the patient's studies with DCMTK getscu from inside the namespace."""
    out.mkdir(parents=True, exist_ok=True)
    result = node.host.run("getscu", *DCMTK_TIMEOUTS, "-v", "-S", "-aec", node.aet, "-od", str(out),
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={patient_id}",
                           "127.0.0.1", str(node.dicom_port), timeout=120)
    assert result.returncode == 0, result.stderr
    assert any(out.iterdir()), f"C-GET at {node.aet} got nothing: {result.stderr[-2000:]}"
    return [dcmread(p) for p in sorted(out.iterdir())]


def _files(node: NamespacedNode) -> dict[str, str]:
    """Name (the SHA-256 it was stored under) -> SHA-256 of the bytes there now."""
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (node.data_dir / "objects").rglob("*.dcm")}


def _events(node: NamespacedNode) -> list[str]:
    with contextlib.closing(sqlite3.connect(node.data_dir / "index.sqlite")) as db:
        return [r[0] for r in db.execute("SELECT event_id FROM patient_events ORDER BY 1")]


def _alive(node: NamespacedNode) -> set[str]:
    return {aet for aet, p in node.peers().items() if p["state"] == "alive"}


def _mesh(network: Network, tmp: Path) -> list[NamespacedNode]:
    """A, B, C in one mesh, each with an HL7 listener, all alive to each other."""
    hosts = [network.add_host(name) for name in ("a", "b", "c")]
    init_mesh(tmp / "a", "A")
    token = invite(tmp / "a", f"{hosts[0].address}:11113", uses=2)
    # getscu calls as GETSCU: known to the nodes, as tests.support.NodeProcess makes it.
    common = ("--replicas", "3", "--hl7-port", str(HL7_PORT), "--allowed-aet", "GETSCU")
    nodes = [NamespacedNode(h, tmp / h.name, h.name.upper(),
                            common if h.name == "a" else (*common, "--join", token))
             for h in hosts]
    for node in nodes:
        node.start()
    everyone = {n.aet for n in nodes}
    wait_for(lambda: all(_alive(n) == everyone - {n.aet} for n in nodes), 90)
    wait_for(lambda: all(len(n.get_json("/api/mesh")["members"]) == 3 for n in nodes), 60)
    return nodes


def _store(node: NamespacedNode, files: list[Path]) -> None:
    result = node.host.run("storescu", *DCMTK_TIMEOUTS, "-aec", node.aet, "127.0.0.1",
                           str(node.dicom_port), *map(str, files), timeout=120)
    assert result.returncode == 0, result.stderr


def _cut_off(nodes: list[NamespacedNode]) -> None:
    """Cut C's link; return once each side sees the other gone."""
    a, b, c = nodes
    c.host.link_down()
    wait_for(lambda: _alive(a) == {"B"} and _alive(b) == {"A"} and _alive(c) == set(), 60)


def test_a_merge_made_while_c_is_cut_off_reaches_c_once_its_link_is_back(
        network: Network, tmp_path: Path) -> None:
    nodes = _mesh(network, tmp_path)
    a, b, c = nodes
    try:
        files = [trauma_study(tmp_path / "in", "TRAUMA-1"),
                 trauma_study(tmp_path / "in", "P-77", "ROE^RICHARD")]
        _store(a, files)
        wait_for(lambda: all(len(_files(n)) == 2 for n in nodes), 90)  # on every node
        out = tmp_path / "found"
        assert _find(c, out, PatientID="TRAUMA-1") == [("TRAUMA-1", "UNKNOWN^TRAUMA")]
        stored = {n.aet: _files(n) for n in nodes}

        _cut_off(nodes)
        identified, merged = _send(
            a, adt("A08", "P1", "TRAUMA-1^^^HOSP", "Smith^Anna", when="20261203100000"),
            adt("A40", "P2", "P-77^^^HOSP", "Roe^Richard", mrg="TRAUMA-1^^^HOSP",
                when="20261203101500"))
        assert ack_code(identified) == "AA" and ack_code(merged) == "AA"
        survivor = [("P-77", "Roe^Richard")] * 2
        wait_for(lambda: _find(b, tmp_path / "fb", PatientID="P-77") == survivor, 60)
        # C heard nothing of it: it still shows the trauma patient as it was stored.
        assert _events(c) == []
        assert _find(c, out, PatientID="TRAUMA-1") == [("TRAUMA-1", "UNKNOWN^TRAUMA")]

        c.host.link_up()
        took = wait_for(lambda: _find(c, out, PatientID="TRAUMA-1") == []
                        and _find(c, out, PatientID="P-77") == survivor, HEALED_BOUND)
        print(f"C shows the merge {took:.1f} s after its link came back")
        # Logged just after the events are applied, so possibly after the answer above.
        wait_for(lambda: "learnt from" in c.log(), 10)

        retrieved = _get(c, tmp_path / "got", "P-77")
        assert sorted((str(d.PatientID), str(d.PatientName)) for d in retrieved) == survivor
        assert {str(d.IssuerOfPatientID) for d in retrieved} == {"HOSP"}
        # Both coerced on the way out: the values replaced kept in Original Attributes
        # Sequence (the survivor's own study had its name in capitals).
        replaced = [d.OriginalAttributesSequence[-1] for d in retrieved]
        assert {r.ReasonForTheAttributeModification for r in replaced} == {"COERCE"}
        assert sorted((str(r.ModifiedAttributesSequence[0].get("PatientID", "")),
                       str(r.ModifiedAttributesSequence[0].PatientName)) for r in replaced) \
            == [("", "ROE^RICHARD"), ("TRAUMA-1", "UNKNOWN^TRAUMA")]
        # dicom3tools finds no inconsistent patient attributes across them.
        checked = subprocess.run(["dcentvfy", *map(str, sorted((tmp_path / "got").iterdir()))],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0 and "Error" not in checked.stderr, checked.stderr
        for node in nodes:  # never rewritten: the same files, each named by its SHA-256
            now = _files(node)
            assert now == stored[node.aet], node.aet
            assert all(name == sha for name, sha in now.items()), node.aet
    finally:
        for node in nodes:
            node.stop()


def test_conflicting_updates_on_both_sides_of_a_partition_converge_to_the_later(
        network: Network, tmp_path: Path) -> None:
    """A08 for one patient at A and at C while they cannot reach each other: once the
    link is back every node shows the update made later (EVN-2), whichever it heard first."""
    nodes = _mesh(network, tmp_path)
    a, b, c = nodes
    try:
        _store(a, [trauma_study(tmp_path / "in", "CONFLICT-1")])
        wait_for(lambda: all(len(_files(n)) == 1 for n in nodes), 90)
        out = {n.aet: tmp_path / f"found-{n.aet}" for n in nodes}
        wait_for(lambda: all(_find(n, out[n.aet], PatientID="CONFLICT-1")
                             == [("CONFLICT-1", "UNKNOWN^TRAUMA")] for n in nodes), 60)
        stored = {n.aet: _files(n) for n in nodes}

        _cut_off(nodes)
        # C, cut off, gets the later correction first; A the earlier one after it.
        (at_c,) = _send(c, adt("A08", "C-1", "CONFLICT-1^^^HOSP", "Later^Name",
                               when="20261203120000"))
        (at_a,) = _send(a, adt("A08", "A-1", "CONFLICT-1^^^HOSP", "Earlier^Name",
                               when="20261203110000"))
        assert ack_code(at_c) == "AA" and ack_code(at_a) == "AA"
        # Each side shows what it heard.
        assert _find(c, out["C"], PatientID="CONFLICT-1") == [("CONFLICT-1", "Later^Name")]
        wait_for(lambda: all(_find(n, out[n.aet], PatientID="CONFLICT-1")
                             == [("CONFLICT-1", "Earlier^Name")] for n in (a, b)), 60)

        c.host.link_up()
        want = [("CONFLICT-1", "Later^Name")]
        took = wait_for(lambda: all(_find(n, out[n.aet], PatientID="CONFLICT-1") == want
                                    for n in nodes), HEALED_BOUND)
        print(f"all nodes show the later update {took:.1f} s after C's link came back")
        # C showed the later one all along: it must hold A's too, and keep its own.
        wait_for(lambda: all(_events(n) == ["HIS|HOSP|A-1", "HIS|HOSP|C-1"] for n in nodes),
                 HEALED_BOUND)
        for node in nodes:  # and the answer stays so
            assert _find(node, out[node.aet], PatientID="CONFLICT-1") == want, node.aet
            assert _find(node, out[node.aet], PatientName="Earlier*") == [], node.aet
            now = _files(node)
            assert now == stored[node.aet] and all(k == v for k, v in now.items()), node.aet
    finally:
        for node in nodes:
            node.stop()
