"""HTTP upload benchmark: POST /api/instances with curl, small and large instances.

1. ``--count`` generated 512x512 CT slices (~0.5 MB each), one curl process each, over
   a fresh node: instances per second and MB/s (wall time of the curl runs only);
2. one large generated CT (``--large-mb``, one frame), uploaded once: MB/s, and the
   node's peak resident memory (VmHWM) before and after, which shows that a body is
   streamed to disk, not held in memory.

Every stored object is checked byte for byte against what was sent. Run from the
repository root:

    .venv/bin/python benchmarks/http_upload.py --count 50 --large-mb 256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != SCRIPT_DIR]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import http_get_json, write_ct_series  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def upload(port: int, path: Path) -> None:
    result = subprocess.run(
        ["curl", "-sS", "--data-binary", f"@{path}", "-w", "\n%{http_code}",
         f"http://127.0.0.1:{port}/api/instances"], capture_output=True, text=True,
        check=True)
    body, _, code = result.stdout.rpartition("\n")
    if code != "200" or json.loads(body)["status"] != "stored":
        raise RuntimeError(f"upload of {path.name} answered {code}: {body}")


def check_stored(data_dir: Path, files: list[Path]) -> None:
    for path in files:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if (data_dir / "objects" / sha[:2] / f"{sha}.dcm").read_bytes() != path.read_bytes():
            raise RuntimeError(f"{path.name} not stored byte for byte")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--large-mb", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(21)
    with tempfile.TemporaryDirectory(prefix="pacsmesh-http-bench-") as tmp:
        root = Path(tmp)
        small = write_ct_series(
            root / "small", (rng.integers(0, 4096, (512, 512), dtype=np.uint16)
                             for _ in range(args.count)),
            patient_name="BENCH^HTTP", patient_id="HTTP1", accession="H1")
        side = int(math.sqrt(args.large_mb * 2**20 / 2))
        large = write_ct_series(root / "large", [np.zeros((side, side), dtype=np.uint16)],
                                patient_name="BENCH^LARGE", patient_id="HTTP2",
                                accession="H2")
        port = free_port()
        data_dir = root / "node"
        node = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "run", "--data-dir", str(data_dir),
             "--bind", "127.0.0.1", "--no-mdns", "--http-auth", "none",
             "--http-port", str(port), "--dicom-port", str(free_port()),
             "--mesh-port", str(free_port()), "--http-max-body", str(2**31)],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    http_get_json(port, "/api/status")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            started = time.perf_counter()
            for path in small:
                upload(port, path)
            small_s = time.perf_counter() - started
            small_mb = sum(p.stat().st_size for p in small) / 1e6
            rss_before = peak_rss_mb(node.pid)
            started = time.perf_counter()
            upload(port, large[0])
            large_s = time.perf_counter() - started
            rss_after = peak_rss_mb(node.pid)
            check_stored(data_dir, [*small, *large])
        finally:
            node.send_signal(signal.SIGINT)
            node.wait(timeout=30)
        large_mb = large[0].stat().st_size / 1e6
        print(f"{args.count} instances ({small_mb:.1f} MB), one curl each: {small_s:.2f} s, "
              f"{args.count / small_s:.1f} instances/s, {small_mb / small_s:.1f} MB/s")
        print(f"one {large_mb:.0f} MB instance: {large_s:.2f} s, {large_mb / large_s:.0f} MB/s; "
              f"node peak RSS {rss_before:.0f} MB before, {rss_after:.0f} MB after")


if __name__ == "__main__":
    main()
