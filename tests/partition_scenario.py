"""A WAN cut between two sites, measured: how soon a study stored at one node is listed
by C-FIND at the other nodes of its side, and how soon its copy reaches the owner on
that side, while the owner on the far side cannot be reached.

Shared by tests/test_partition_latency.py (a generous bound) and benchmarks/partition.py
(percentiles). Site A holds a1, a2, a3, site B holds b1, b2 (network namespaces, one
bridge per site joined by one link, ``ip link set DEV down`` cuts it: no reset, no
refusal, just silence, as when a WAN link drops). Every study stored has one owner on
each side, so each store also queues a copy that hangs on the cut link.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pydicom import dcmread

from replication.placement import owners
from tests.netns import NamespacedNode, Network, init_mesh, invite, wait_for
from tests.test_faults import _uid, make_ct

SITE_A = ("a1", "a2", "a3")
SITE_B = ("b1", "b2")


@dataclass
class Timings:
    """Seconds from the end of each store (storescu) at a1."""

    listed: list[float] = field(default_factory=list)  # until a2 and a3 both list it
    delivered: list[float] = field(default_factory=list)  # until its site-A owner holds it


@dataclass
class CutResult:
    before: Timings
    during: Timings


def _held(node: NamespacedNode) -> set[str]:
    return {p.stem for p in (node.data_dir / "objects").rglob("*.dcm")}


def _holds(node: NamespacedNode, sha: str) -> bool:
    return sha in _held(node)


def _alive(node: NamespacedNode) -> set[str]:
    return {aet for aet, p in node.peers().items() if p["state"] == "alive"}


def lists(node: NamespacedNode, study_uid: str, out: Path) -> bool:
    """Whether C-FIND (DCMTK findscu, from inside the node's namespace) lists the study."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    result = node.host.run(
        "findscu", "-S", "-to", "5", "-ta", "5", "-td", "5", "-aec", node.aet, "-X",
        "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
        "127.0.0.1", str(node.dicom_port), timeout=20)
    return result.returncode == 0 and any(out.iterdir())


def _poll(predicate: Callable[[], bool], bound: float) -> float:
    """Seconds until ``predicate`` holds (polled without pause: each poll takes a while)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > bound:
            raise TimeoutError(f"not within {bound} s")
    return time.monotonic() - start


def _intact(node: NamespacedNode) -> bool:
    return all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem
               for p in (node.data_dir / "objects").rglob("*.dcm"))


def _converged(ids: dict[str, NamespacedNode], origin: NamespacedNode) -> None:
    """After healing, nothing was lost: every instance stored at ``origin`` is on both
    its owners, byte for byte (files are named by their SHA-256), and every index counts
    what is on its disk."""
    study_of = {p.stem: str(dcmread(p, stop_before_pixels=True).StudyInstanceUID)
                for p in (origin.data_dir / "objects").rglob("*.dcm")}
    wait_for(lambda: all(sha in _held(ids[o]) for sha, study in study_of.items()
                         for o in owners(study, list(ids), 2)), 120)
    wait_for(lambda: all(n.get_json("/api/status")["outbox_depth"] == 0
                         for n in ids.values()), 120)
    for node in ids.values():
        assert _intact(node), node.aet
        assert node.get_json("/api/status")["instances"] == len(_held(node)), node.aet


def run_cut(
    tmp: Path, stores: int = 20, baseline: int = 5, bound: float = 60.0,
    log: Callable[[str], None] = lambda line: None,
) -> CutResult:
    """Form the mesh, measure ``baseline`` stores with the link up, cut it, measure
    ``stores`` more. Each wait is bounded by ``bound`` seconds (TimeoutError past it)."""
    with Network() as network:
        site_b = network.add_segment()
        hosts = [network.add_host(n) for n in SITE_A] + [network.add_host(n, site_b)
                                                          for n in SITE_B]
        init_mesh(tmp / "a1", "A1")
        token = invite(tmp / "a1", f"{hosts[0].address}:11113", uses=len(hosts))
        nodes = [NamespacedNode(h, tmp / h.name, h.name.upper(),
                                () if h.name == "a1" else ("--join", token)) for h in hosts]
        try:
            for node in nodes:
                node.start()
            everyone = {n.aet for n in nodes}
            wait_for(lambda: all(_alive(n) == everyone - {n.aet} for n in nodes), 90)
            wait_for(lambda: all(len(n.get_json("/api/mesh")["members"]) == len(nodes)
                                 for n in nodes), 60)
            ids = {n.get_json("/api/mesh")["node_id"]: n for n in nodes}
            side_a = {i for i, n in ids.items() if n.host.name in SITE_A[1:]}
            side_b = {i for i, n in ids.items() if n.host.name in SITE_B}
            numbers = (n for n in range(1, 100_000)
                       if len(set(owners(_uid(1, n), list(ids), 2)) & side_a) == 1
                       and len(set(owners(_uid(1, n), list(ids), 2)) & side_b) == 1)
            a1, peers = nodes[0], nodes[1:3]

            def measure(count: int, into: Timings) -> None:
                for _ in range(count):
                    number = next(numbers)
                    study = _uid(1, number)
                    (owner,) = (ids[o] for o in owners(study, list(ids), 2) if o in side_a)
                    path = make_ct(tmp / "files" / f"{number}.dcm", number, 0)
                    before = _held(a1)
                    result = a1.host.run("storescu", "-aec", a1.aet, "127.0.0.1",
                                         str(a1.dicom_port), str(path), timeout=60)
                    stored = time.monotonic()
                    assert result.returncode == 0, result.stderr
                    (sha,) = _held(a1) - before
                    for peer in peers:
                        _poll(partial(lists, peer, study, tmp / "find" / peer.aet), bound)
                    into.listed.append(time.monotonic() - stored)
                    _poll(partial(_holds, owner, sha), bound)
                    into.delivered.append(time.monotonic() - stored)
                    log(f"study {number}: listed after {into.listed[-1]:.2f} s, "
                        f"at its owner {owner.aet} after {into.delivered[-1]:.2f} s")

            (tmp / "files").mkdir(exist_ok=True)
            result = CutResult(Timings(), Timings())
            measure(baseline, result.before)
            network.cut_segment(site_b)
            log("WAN link cut")
            measure(stores, result.during)
            network.heal_segment(site_b)
            log("WAN link healed")
            _converged(ids, a1)
            return result
        finally:
            for node in nodes:
                node.stop()
