"""C-GET (DCMTK getscu) of a 200-instance study: held locally, held on a peer, and with
the peer killed mid-stream. Prints time to first image and total time for each.

    .venv/bin/python -m benchmarks.retrieve [--instances 200] [--side 256]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support import NodeProcess
from tests.test_mesh_retrieve import form_mesh, mesh_view, study_on_b_and_c


def timed_get(node: NodeProcess, out: Path, study: str, on_progress: Any = None) -> tuple[
        float, float, int]:
    """(seconds to the first image written, seconds in all, files received)."""
    out.mkdir(parents=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["getscu", "-S", "+B", "-aec", node.aet, "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", *node.address],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # DCMTK leaves Nagle's algorithm on unless told: each C-STORE response would then
        # wait ~40 ms for our delayed ACK (as benchmarks/ingest.py does for storescu).
        env={**os.environ, "TCP_NODELAY": os.environ.get("BENCH_NODELAY", "1")})
    first = None
    while proc.poll() is None:
        if first is None and any(out.iterdir()):
            first = time.perf_counter() - started
        if on_progress is not None:
            on_progress()
        time.sleep(0.002)
    total = time.perf_counter() - started
    return first if first is not None else total, total, len(list(out.iterdir()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--side", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nodes: list[NodeProcess] = []

        def make_node(name: str = "node", **kwargs: Any) -> NodeProcess:
            node = NodeProcess(data_dir=root / name, **kwargs)
            nodes.append(node)
            return node

        try:
            mesh = form_mesh(make_node)
            a, b, _ = mesh
            ids = {mesh_view(n)["node_id"]: n for n in mesh}
            study, _ = study_on_b_and_c(mesh, root / "s1", args.instances, args.side)
            other, _ = study_on_b_and_c(mesh, root / "s2", args.instances, args.side)
            rows = [("held locally (getscu at B)", *timed_get(b, root / "local", study)),
                    ("held on a peer (getscu at A)", *timed_get(a, root / "peer", study)),
                    ("again at A (from its cache)", *timed_get(a, root / "cached", study))]
            killed: list[str] = []

            def kill_holder() -> None:
                by_holder = a.status()["retrieve"]["by_holder"]
                if not killed and sum(by_holder.values()) >= args.instances * 1.3:
                    holder = max(by_holder, key=by_holder.get)
                    ids[holder].kill()
                    killed.append(holder)

            # The first study's fetches count in by_holder too: kill ~30% into the second.
            rows.append(("peer killed mid-stream (getscu at A)",
                         *timed_get(a, root / "killed", other, kill_holder)))
        finally:
            for node in nodes:
                node.stop()
    print(f"C-GET of {args.instances} instances of {args.side}x{args.side} CT "
          f"({args.side * args.side * 2 // 1024} KiB of pixels each)")
    print(f"{'case':40} {'first image':>12} {'total':>9} {'files':>6}")
    for name, first, total, files in rows:
        print(f"{name:40} {first * 1000:10.0f} ms {total:7.2f} s {files:6d}")
    print(f"extra time when the holder is killed: {rows[3][2] - rows[1][2]:+.2f} s"
          f" (killed: {'yes' if killed else 'no'})")


if __name__ == "__main__":
    main()
