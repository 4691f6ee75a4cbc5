#!/usr/bin/env python3
"""Three PACSmesh nodes on this machine, one mesh: store a study, watch it replicate, get it.

Run from the repository root after README's install (DCMTK on the PATH for storescu,
getscu and findscu):

    .venv/bin/python examples/three_nodes/run.py            # Ctrl-C stops the nodes
    .venv/bin/python examples/three_nodes/run.py --keep     # leave them running
    .venv/bin/python examples/three_nodes/run.py --once     # store, check, stop (for CI)

Steps: ``pacsmesh mesh init`` on node 1, ``mesh invite`` for the two others, which
start with ``--join TOKEN --peer`` (node 1's mesh port: no multicast needed); DCMTK
storescu sends pydicom's CT_small.dcm plus a few instances made from it to node 1; the
study's holders are polled over ``GET /api/studies/{uid}`` until two nodes hold every
instance; DCMTK getscu gets it back from a node other than node 1, and each file is
compared with what was sent (data set bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom.dsutils import split_dataset

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
GENERATED = 4  # instances made from CT_small.dcm, in a second series of the same study
REPLICAS = 2  # the mesh default: every study on two nodes
TIMEOUT = 60.0  # seconds for a node to start, and for replication to finish


class ExampleError(RuntimeError):
    """A step failed; the message says which and why."""


@dataclass
class Node:
    name: str
    data_dir: Path
    dicom_port: int
    http_port: int
    mesh_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def aet(self) -> str:
        return self.name.upper()

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def get_json(self, path: str) -> object:
        with urllib.request.urlopen(f"http://{HOST}:{self.http_port}{path}", timeout=5) as rsp:
            return json.loads(rsp.read())


def pacsmesh(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env=_env())
    if result.returncode != 0:
        raise ExampleError(f"pacsmesh {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


def _env() -> dict[str, str]:
    # A PACSMESH_* variable in the caller's shell would change every node's config.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSMESH_")}
    env["TCP_NODELAY"] = "1"  # DCMTK tools: no delayed-ACK wait per response
    return env


def _ports(base: int) -> list[int]:
    if base:
        return list(range(base, base + 9))
    ports, socks = [], []
    for _ in range(9):  # all held at once, so no two are the same
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def start(node: Node, *extra: str) -> None:
    cmd = [sys.executable, "-m", "node.cli", "run", "--data-dir", str(node.data_dir),
           "--aet", node.aet, "--bind", HOST, "--dicom-port", str(node.dicom_port),
           "--http-port", str(node.http_port), "--mesh-port", str(node.mesh_port),
           # C-GET and C-MOVE are for known AE titles only: DCMTK's getscu and movescu
           # call as GETSCU and MOVESCU unless told otherwise.
           "--allowed-aet", "GETSCU", "--allowed-aet", "MOVESCU",
           "--no-mdns", *extra]
    with node.log_path.open("ab") as log:
        # A session of its own: Ctrl-C reaches only this script, which stops the nodes
        # in order instead of racing them.
        node.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=_env(),
                                     start_new_session=True)
    wait(f"{node.aet} to start", lambda: _answers(node), node)
    print(f"  {node.aet}: DICOM {HOST}:{node.dicom_port}, HTTP {node.http_port}, "
          f"mesh {node.mesh_port}, data {node.data_dir}")


def _answers(node: Node) -> bool:
    try:
        node.get_json("/api/status")
        return True
    except OSError:
        return False


def wait(what: str, ready: object, node: Node | None = None, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        if node is not None and node.proc is not None and node.proc.poll() is not None:
            raise ExampleError(f"{node.aet} exited ({node.proc.returncode}); see {node.log_path}")
        if time.monotonic() > deadline:
            raise ExampleError(f"timed out waiting for {what}")
        time.sleep(0.2)


def stop(nodes: list[Node]) -> None:
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        if node.proc is None:
            continue
        try:
            node.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            print(f"  {node.aet} ignored SIGTERM for 20 s: killed", file=sys.stderr)
            node.proc.kill()
            node.proc.wait()


def make_mesh(nodes: list[Node]) -> None:
    first, *others = nodes
    pacsmesh("mesh", "init", "--data-dir", str(first.data_dir), "--aet", first.aet)
    start(first)
    token = pacsmesh("mesh", "invite", "--data-dir", str(first.data_dir), "--uses",
                     str(len(others)), "--no-seed").strip().splitlines()[-1]
    for node in others:
        start(node, "--join", token, "--peer", f"{HOST}:{first.mesh_port}")

    def all_members() -> bool:
        return all(len(n.get_json("/api/mesh")["members"]) == len(nodes)  # type: ignore[index]
                   for n in nodes)

    wait("every node to be a member of the mesh", all_members)
    print(f"mesh of {len(nodes)} members formed")


def sample_study(folder: Path) -> tuple[str, list[Path]]:
    """CT_small.dcm and GENERATED copies of it as a second series of the same study."""
    folder.mkdir(parents=True)
    original = Path(get_testdata_file("CT_small.dcm"))
    files = [folder / "CT_small.dcm"]
    shutil.copy(original, files[0])
    series = generate_uid()
    for n in range(GENERATED):
        ds = dcmread(original)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        ds.SeriesNumber = 2
        path = folder / f"generated_{n + 1}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return str(ds.StudyInstanceUID), files


def dcmtk(*cmd: str) -> None:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120, env=_env())
    if result.returncode != 0:
        raise ExampleError(f"{cmd[0]} failed: {result.stderr.strip() or result.stdout.strip()}")


def holders(nodes: list[Node], study_uid: str) -> dict[str, int]:
    """AE title -> instances of the study each node holds (its own index)."""
    counts = {}
    for node in nodes:
        try:
            rows = node.get_json(f"/api/studies/{study_uid}")["holders"]  # type: ignore[index]
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            rows = []
        counts[node.aet] = sum(r["instances"] for r in rows if r["this_node"])
    return counts


def watch_replication(nodes: list[Node], study_uid: str, instances: int) -> dict[str, int]:
    last = ""
    deadline = time.monotonic() + TIMEOUT
    while True:
        now = holders(nodes, study_uid)
        line = ", ".join(f"{aet} {n}/{instances}" for aet, n in now.items())
        if line != last:
            print(f"  replication: {line}")
            last = line
        complete = [aet for aet, n in now.items() if n == instances]
        if len(complete) >= REPLICAS and any(aet != nodes[0].aet for aet in complete):
            return now
        if time.monotonic() > deadline:
            raise ExampleError(f"the study did not reach {REPLICAS} nodes in {TIMEOUT:.0f} s")
        time.sleep(0.5)


def data_set(path: Path) -> bytes:
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def by_sop_uid(files: list[Path]) -> dict[str, bytes]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): data_set(p) for p in files}


def get_back(node: Node, study_uid: str, origin: Node, out: Path) -> int:
    """getscu the study from ``node``; every file must be what ``origin`` stored (the
    bytes storescu sent, which are not quite the sample files: storescu re-encodes)."""
    out.mkdir()
    # +B: getscu writes what arrives, untouched.
    dcmtk("getscu", "-S", "+B", "-aec", node.aet, "-od", str(out), "-k",
          "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", HOST,
          str(node.dicom_port))
    want = by_sop_uid(list((origin.data_dir / "objects").rglob("*.dcm")))
    got = by_sop_uid(list(out.iterdir()))
    if got != want:
        missing = len(set(want) - set(got))
        differ = sum(1 for uid in set(want) & set(got) if got[uid] != want[uid])
        raise ExampleError(f"getscu from {node.aet}: {missing} missing, {differ} different")
    print(f"getscu from {node.aet}: {len(got)} instances, each bit-exact as stored on "
          f"{origin.aet}, in {out}")
    return len(got)


def next_steps(nodes: list[Node], study_uid: str) -> None:
    n = nodes[1]
    print(f"""
Next:
  - point a DICOM viewer (Weasis, Horos, OHIF with a DIMSE proxy...) at any node, e.g.
    AE title {n.aet}, host {HOST}, port {n.dicom_port}; query and retrieve from there
  - findscu -S -aec {n.aet} -k QueryRetrieveLevel=STUDY -k StudyInstanceUID -k PatientName \\
        -k NumberOfStudyRelatedInstances {HOST} {n.dicom_port}
  - curl http://{HOST}:{n.http_port}/api/studies/{study_uid}
  - {sys.executable} -m node.cli status --data-dir {n.data_dir} --http-port {n.http_port}
  - {sys.executable} -m node.cli mesh status --data-dir {n.data_dir} --http-port {n.http_port}
  - storescu -aec {nodes[2].aet} {HOST} {nodes[2].dicom_port} your.dcm   (and watch it spread)""")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="Where data dirs and logs go (default: temp).")
    parser.add_argument("--base-port", type=int, default=0,
                        help="First of nine consecutive ports (default: any free ones).")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="Run the steps, stop the nodes, exit.")
    mode.add_argument("--keep", action="store_true", help="Leave the nodes running at the end.")
    args = parser.parse_args(argv)

    work = args.dir or Path(tempfile.mkdtemp(prefix="pacsmesh-three-nodes-"))
    work.mkdir(parents=True, exist_ok=True)
    ports = _ports(args.base_port)
    nodes = [Node(f"node{i + 1}", work / f"node{i + 1}", *ports[3 * i:3 * i + 3])
             for i in range(3)]
    # Ctrl-C and SIGTERM both end in the `finally` below, which stops the nodes.
    signal.signal(signal.SIGTERM, _interrupt)
    keep = False
    try:
        print(f"starting three nodes in {work}")
        make_mesh(nodes)
        study_uid, files = sample_study(work / "sent")
        dcmtk("storescu", "-aec", nodes[0].aet, HOST, str(nodes[0].dicom_port),
              *map(str, files))
        print(f"stored study {study_uid} ({len(files)} instances) on {nodes[0].aet}")
        now = watch_replication(nodes, study_uid, len(files))
        source = next(n for n in nodes[1:] if now[n.aet] == len(files))
        get_back(source, study_uid, nodes[0], work / "retrieved")
        print(f"study held by {sum(1 for n in now.values() if n == len(files))} nodes")
        if args.once:
            return 0
        next_steps(nodes, study_uid)
        if args.keep:
            keep = True
            pids = " ".join(str(n.proc.pid) for n in nodes if n.proc)
            print(f"\nnodes left running (pids {pids}); stop them with: kill {pids}")
            return 0
        print("\nnodes running; Ctrl-C stops them")
        while all(n.proc is not None and n.proc.poll() is None for n in nodes):
            time.sleep(1)
        raise ExampleError("a node exited; see the logs in " + str(work))
    except KeyboardInterrupt:
        print("\nstopping")
        return 0
    except ExampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not keep:
            stop(nodes)


if __name__ == "__main__":
    sys.exit(main())
