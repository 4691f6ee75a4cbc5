"""The disaster drill: two sites lose their WAN, a server and a workstation, and nothing is lost.

Run as root on Linux, from anywhere (it finds the repository itself):

    python3 examples/disaster_drill/drill.py            # the full drill
    python3 examples/disaster_drill/drill.py --short    # a quicker one (what CI runs)

It builds, in network namespaces on this machine:

    site A: A-SERVER, A-WS1, A-WS2  (one bridge)  ==WAN, tbf-limited==  site B: B-SERVER, B-WS1

then plays the drill and prints a timeline:

1. modalities at A store studies; they replicate within A and across the WAN to B;
2. the WAN is cut: both sites keep taking studies and answering queries and retrievals;
   the outboxes grow;
3. A-SERVER is killed (SIGKILL) and A-WS1's link is cut: A-WS2 still serves every study
   it holds;
4. the WAN and A-WS1's link come back and A-SERVER restarts: the mesh converges;
5. a final check compares every node's holdings with what was stored (SHA-256 by SOP
   instance): instances stored, copies expected on the studies' owners, copies present,
   lost (must be 0), time to converge, bytes over the WAN vs DICOM bytes that crossed it.

Namespaces, links and processes are removed on exit, on failure and on Ctrl-C. The exit
status is 0 only if nothing was lost and the mesh converged.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.chdir(REPO)  # nodes are started as ``python -m node.cli`` from here

from pydicom import dcmread  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from replication.placement import owners  # noqa: E402
from tests.netns import (  # noqa: E402
    Host,
    NamespacedNode,
    Network,
    init_mesh,
    invite,
    netns_available,
)
from tests.support import dataset_bytes  # noqa: E402

MESH_PORT = 11113


@dataclass
class Plan:
    studies_before: int  # stored at A before the WAN is cut
    studies_cut: int  # stored on each side while cut off
    instances: int  # per study
    wan_rate: str
    replicas: int
    converge_timeout: float


FULL = Plan(studies_before=8, studies_cut=4, instances=10, wan_rate="20mbit", replicas=3,
            converge_timeout=600)
SHORT = Plan(studies_before=3, studies_cut=2, instances=4, wan_rate="20mbit", replicas=3,
             converge_timeout=240)


@dataclass
class Stored:
    """What the modalities sent: SOP Instance UID -> (study, SHA-256, size), and the site
    (A or B) where each instance entered the mesh."""

    instances: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    site: dict[str, str] = field(default_factory=dict)


class Timeline:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:7.1f} s] {text}", flush=True)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except (ConnectionError, ValueError, subprocess.TimeoutExpired, sqlite3.Error):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not reached within {timeout:.0f} s")


def make_studies(folder: Path, count: int, instances: int, label: str, stored: Stored
                 ) -> list[Path]:
    """``count`` studies of ``instances`` CT slices each (pydicom's CT_small as template,
    with fresh UIDs and synthetic patients), written to folders; returns the folders."""
    template = dcmread(get_testdata_file("CT_small.dcm"))
    folders = []
    for s in range(count):
        study_dir = folder / f"{label}-{s}"
        study_dir.mkdir(parents=True)
        study_uid, series_uid = generate_uid(), generate_uid()
        for i in range(instances):
            ds = template.copy()
            ds.PatientName = f"DRILL^{label}{s}"
            ds.PatientID = f"DRILL-{label}-{s}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i + 1
            pixels = bytearray(ds.PixelData)
            pixels[i % len(pixels)] ^= 1  # every slice different bytes
            ds.PixelData = bytes(pixels)
            path = study_dir / f"{i:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            stored.instances[str(ds.SOPInstanceUID)] = (study_uid, "", path.stat().st_size)
            stored.site[str(ds.SOPInstanceUID)] = label[0]
        folders.append(study_dir)
    return folders


def data_set_sha(path: Path) -> str:
    """SHA-256 of the data set as it goes over DICOM: the file meta is left out, since
    each receiver writes its own (PS3.10); the data set must arrive bit for bit."""
    return hashlib.sha256(dataset_bytes(path)).hexdigest()


def store(node: NamespacedNode, folders: list[Path], stored: Stored) -> None:
    """A modality's C-STORE (DCMTK storescu from inside the node's site). What the node
    then holds is the reference every copy is checked against: DCMTK may re-encode a
    data set on the way, and the archive keeps what it received."""
    for folder in folders:
        result = node.host.run("storescu", "-aet", "MODALITY", "-aec", node.aet, "+sd",
                               "127.0.0.1", "11112", str(folder), timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"storescu to {node.aet} failed: {result.stderr.strip()}")
    received = holdings(node)
    for sop, (study, sha, size) in list(stored.instances.items()):
        if not sha:
            if sop not in received:
                raise RuntimeError(f"{node.aet} did not store an instance it acknowledged")
            stored.instances[sop] = (study, received[sop], size)


def holdings(node: NamespacedNode) -> dict[str, str]:
    """SOP Instance UID -> data set SHA-256 of the file on disk, for what the node's index
    lists. Read from the node's own files, not its word: each file is hashed again."""
    db = node.data_dir / "index.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute("SELECT sop_uid, sha256 FROM instances").fetchall()
    out = {}
    for sop_uid, sha in rows:
        path = node.data_dir / "objects" / sha[:2] / f"{sha}.dcm"
        if path.exists():
            out[sop_uid] = data_set_sha(path)
    return out


def outbox(node: NamespacedNode) -> int:
    return int(node.get_json("/api/status")["outbox_depth"])


def find_studies(node: NamespacedNode) -> int:
    """Studies a C-FIND at STUDY level lists (DCMTK findscu, inside the site)."""
    result = node.host.run("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY",
                           "-k", "StudyInstanceUID", "-aec", node.aet, "127.0.0.1", "11112",
                           timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"findscu at {node.aet} failed: {result.stderr.strip()}")
    return result.stderr.count("(0020,000d)")


def get_study(node: NamespacedNode, study_uid: str, out: Path) -> dict[str, str]:
    """C-GET of one study (DCMTK getscu, inside the site); SOP UID -> data set SHA-256."""
    out.mkdir(parents=True, exist_ok=True)
    # +B: getscu writes what arrived, bit for bit (else it re-encodes group lengths).
    result = node.host.run("getscu", "-S", "+B", "-k", "QueryRetrieveLevel=STUDY",
                           "-k", f"StudyInstanceUID={study_uid}", "-aec", node.aet,
                           "-od", str(out), "127.0.0.1", "11112", timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"getscu at {node.aet} failed: {result.stderr.strip()}")
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): data_set_sha(p)
            for p in out.iterdir()}


def serve_all(node: NamespacedNode, stored: Stored, out: Path) -> tuple[int, int]:
    """C-GET every study ``node`` holds; (studies served bit-exact, studies held)."""
    mine = holdings(node)
    studies = {stored.instances[sop][0] for sop in mine if sop in stored.instances}
    served = 0
    for study in sorted(studies):
        got = get_study(node, study, out / study)
        expected = {sop: v[1] for sop, v in stored.instances.items()
                    if v[0] == study and sop in mine}
        served += all(got.get(sop) == sha for sop, sha in expected.items())
    return served, len(studies)


def shape_wan(link: str, far: str, rate: str) -> None:
    for dev in (link, far):
        subprocess.run(["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                        "burst", "32kbit", "latency", "400ms"], check=True)


def wan_bytes(link: str) -> int:
    stats = Path("/sys/class/net") / link / "statistics"
    return sum(int((stats / f).read_text()) for f in ("tx_bytes", "rx_bytes"))


def drill(plan: Plan, work: Path) -> int:
    t = Timeline()
    stored = Stored()
    with Network() as net:
        site_b = net.add_segment()
        wan_link = dict(net.segments)[site_b]
        wan_far = wan_link.replace("pmw", "pmx", 1)
        shape_wan(wan_link, wan_far, plan.wan_rate)
        names = ["A-SERVER", "A-WS1", "A-WS2", "B-SERVER", "B-WS1"]
        hosts: dict[str, Host] = {
            name: net.add_host(name, site_b if name.startswith("B") else None)
            for name in names
        }
        init_mesh(work / "A-SERVER", "A_SERVER")
        token = invite(work / "A-SERVER", f"{hosts['A-SERVER'].address}:{MESH_PORT}",
                       uses=len(names))
        seeds = ("--peer", f"{hosts['A-SERVER'].address}:{MESH_PORT}",
                 "--peer", f"{hosts['B-SERVER'].address}:{MESH_PORT}")
        nodes: dict[str, NamespacedNode] = {}
        for name in names:
            data_dir = work / name
            data_dir.mkdir(exist_ok=True)
            # Owners unreachable for 10 s get hinted copies on their stand-ins.
            (data_dir / "pacsmesh.toml").write_text("hint_after = 10\n")
            extra = ("--replicas", str(plan.replicas), "--no-mdns", "--allowed-aet", "GETSCU",
                     *seeds)
            if name != "A-SERVER":
                extra = (*extra, "--join", token)
            nodes[name] = NamespacedNode(hosts[name], data_dir, name.replace("-", "_"),
                                         extra).start()
        t.say(f"5 nodes started: site A {hosts['A-SERVER'].address} .. site B "
              f"{hosts['B-SERVER'].address}, WAN {plan.wan_rate}, {plan.replicas} replicas")
        wait_until(lambda: all(len(n.get_json("/api/mesh")["members"]) == len(names)
                               for n in nodes.values()), 90, "every node in the mesh")
        ids = sorted(m["node_id"] for m in nodes["A-SERVER"].get_json("/api/mesh")["members"])
        by_id = {n.get_json("/api/mesh")["node_id"]: n for n in nodes.values()}
        t.say("mesh formed: every node lists 5 members")

        def converged() -> bool:
            held = {id_: holdings(node) for id_, node in by_id.items()}
            return all(
                held[owner].get(sop) == sha
                for sop, (study, sha, _) in stored.instances.items()
                for owner in owners(study, ids, plan.replicas)
            )

        # 1. Normal day.
        wan_start = wan_bytes(wan_link)
        store(nodes["A-SERVER"], make_studies(work / "in", plan.studies_before,
                                              plan.instances, "A", stored), stored)
        t.say(f"1. modalities stored {plan.studies_before} studies "
              f"({len(stored.instances)} instances) at A-SERVER")
        took = wait_until(converged, plan.converge_timeout, "replication before the cut")
        t.say(f"   replicated to every owner, across the WAN too, in {took:.1f} s")

        # 2. The WAN is cut.
        net.cut_segment(site_b)
        t.say("2. WAN cut")
        store(nodes["A-SERVER"], make_studies(work / "in", plan.studies_cut, plan.instances,
                                              "A-cut", stored), stored)
        store(nodes["B-SERVER"], make_studies(work / "in", plan.studies_cut, plan.instances,
                                              "B-cut", stored), stored)
        t.say(f"   both sites still take studies: {plan.studies_cut} more at each server")
        for name in ("A-WS2", "B-WS1"):
            served, held_here = serve_all(nodes[name], stored, work / "get" / name)
            t.say(f"   {name} answers C-FIND ({find_studies(nodes[name])} studies) and serves "
                  f"{served} of the {held_here} studies it holds (C-GET, bit-exact)")
            if served != held_here:
                t.say(f"   FAILED: {name} could not serve every study it holds")
                return 1
        wait_until(lambda: all(outbox(nodes[n]) > 0 for n in ("A-SERVER", "B-SERVER")), 60,
                   "copies owed across the cut")
        depths = {n: outbox(nodes[n]) for n in ("A-SERVER", "B-SERVER")}
        t.say(f"   outboxes grow (copies owed across the cut): {depths}")

        # 3. A-SERVER dies, A-WS1 is cut off.
        nodes["A-SERVER"].kill()
        hosts["A-WS1"].link_down()
        t.say("3. A-SERVER killed (SIGKILL), A-WS1's link cut")
        survivor = nodes["A-WS2"]
        served, held_here = serve_all(survivor, stored, work / "get" / "step3")
        t.say(f"   A-WS2 serves {served} of the {held_here} studies it holds "
              f"(C-GET, bit-exact); C-FIND lists {find_studies(survivor)}")
        if served != held_here:
            t.say("   FAILED: A-WS2 could not serve every study it holds")
            return 1

        # 4. Recovery.
        net.heal_segment(site_b)
        hosts["A-WS1"].link_up()
        nodes["A-SERVER"].start()
        t.say("4. WAN back, A-WS1's link back, A-SERVER restarted")
        recovery = time.monotonic()
        try:
            wait_until(lambda: converged() and all(outbox(n) == 0 for n in nodes.values()),
                       plan.converge_timeout, "convergence after recovery")
        except TimeoutError as exc:
            t.say(f"   {exc}")
        converge_time = time.monotonic() - recovery

        # 5. The count.
        held = {id_: holdings(node) for id_, node in by_id.items()}
        site_of = {id_: node.host.name[0] for id_, node in by_id.items()}
        expected = present = lost = across = 0
        for sop, (study, sha, size) in stored.instances.items():
            good = [id_ for id_, h in held.items() if h.get(sop) == sha]
            lost += not good
            for owner in owners(study, ids, plan.replicas):
                expected += 1
                present += owner in good
            # Copies now at the other site: DICOM bytes that had to cross the WAN.
            across += size * sum(site_of[id_] != stored.site[sop] for id_ in good)
        wan_total = wan_bytes(wan_link) - wan_start
        ok = lost == 0 and present == expected
        t.say("5. final check (every file hashed again on every node)")
        print(f"   instances stored         {len(stored.instances)}")
        print(f"   copies expected (owners) {expected}")
        print(f"   copies present           {present}")
        print(f"   lost                     {lost}")
        print(f"   converged                {'yes' if present == expected else 'NO'}"
              f" ({converge_time:.1f} s after recovery)")
        print(f"   WAN bytes (both ways)    {wan_total / 1e6:.2f} MB for "
              f"{across / 1e6:.2f} MB of DICOM copies that crossed it"
              f" ({wan_total / max(across, 1):.2f}x)")
        for node in nodes.values():
            node.stop()
        return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="fewer, smaller studies (CI)")
    parser.add_argument("--work-dir", type=Path, help="keep data dirs and logs here")
    args = parser.parse_args()
    reason = netns_available()
    if reason is not None:
        print(f"drill: cannot build the sites: {reason}", file=sys.stderr)
        return 2
    # SIGTERM ends the drill like Ctrl-C: the Network context removes everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    plan = SHORT if args.short else FULL
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        return drill(plan, args.work_dir)
    with tempfile.TemporaryDirectory(prefix="pacsmesh-drill-") as tmp:
        return drill(plan, Path(tmp))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("drill: interrupted; namespaces and processes removed", file=sys.stderr)
        sys.exit(130)
