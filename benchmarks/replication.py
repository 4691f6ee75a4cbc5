"""Replication benchmark: PACSmesh member-to-member copies vs plain DICOM C-STORE.

Three measurements, printed side by side in one table:

(a) Loopback throughput. Two nodes on 127.0.0.1 form a mesh (``--replicas 2``, so
    node B owns every study). A generated CT study (default 200 instances of 512x512
    uint16, ~105 MB) is stored on node A with DCMTK ``storescu``; the clock runs from the
    end of ``storescu`` until B's ``/api/status`` reports all N instances and A's outbox
    is empty. Reference: the same files from ``storescu`` to DCMTK ``storescp`` on
    loopback (wall time of ``storescu``).

(b) A 20 Mbit/s link. Two network namespaces on a bridge; both root-side veth ends get
    ``tc qdisc add dev <veth> root tbf rate 20mbit burst 32kbit latency 400ms`` (so each
    direction is limited). Plain C-STORE: ``storescu`` in namespace A to ``storescp`` in
    namespace B. PACSmesh: node A (namespace A) founds the mesh, node B (namespace B)
    joins with an invite whose seed is A:11113; the study is stored on A from inside
    namespace A, and the replication time is measured as in (a), plus the total from the
    start of ``storescu`` (replication starts while A is still ingesting). A smaller study
    (default 60 instances, ~31 MB) keeps the run short. Target: PACSmesh <= 0.6x C-STORE.

(c) Compression ratio of the replication encoding (``replication.transfer.encode``,
    zstd level 3) over the real images of pydicom-data with uncompressed transfer
    syntaxes (Implicit/Explicit VR Little Endian, Explicit VR Big Endian; Deflated is
    left out, as it is compressed already). Target: >= 2x.

Test data: a synthetic CT phantom, not random bytes: a circular reconstruction field of
view (padding outside), a body ellipse with lungs, mediastinum, a spine and a table,
all shifting smoothly from slice to slice, plus Gaussian noise (sigma ``--noise`` HU,
default 8), so zstd sees roughly what it would see in a real scan.

Everything stays on loopback or inside the namespaces this script creates (needs root
for part (b)); every namespace and process is removed on exit.

Run from the repository root:

    .venv/bin/python benchmarks/replication.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
)

# benchmarks/discovery.py would shadow the ``discovery`` package: keep the repo root only.
SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != SCRIPT_DIR]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import http_get_json, write_ct_series  # noqa: E402
from node.transcode import UNCOMPRESSED  # noqa: E402
from replication.transfer import encode  # noqa: E402
from tests.netns import (  # noqa: E402
    NamespacedNode,
    Network,
    netns_available,
)
from tests.netns import init_mesh as ns_init_mesh  # noqa: E402
from tests.netns import invite as ns_invite  # noqa: E402
from tests.support import (  # noqa: E402
    NodeProcess,
    free_port,
    one_file_per_instance,
    transfer_syntax,
)

ROWS = COLUMNS = 512
CALLING_AET = "BENCHSCU"
STORESCP_AET = "STORESCP"
STORESCP_NS_PORT = 11114  # in namespace B, next to the node's default ports
TBF = ["rate", "20mbit", "burst", "32kbit", "latency", "400ms"]
POLL = 0.1  # seconds between status polls
MB = 1e6


class BenchmarkError(RuntimeError):
    pass


# --- tools ---------------------------------------------------------------------------------


def dcmtk(name: str) -> str:
    """DCMTK's tool, not pynetdicom's same-named script in the venv."""
    for folder in ("/usr/bin", "/usr/local/bin"):
        path = Path(folder, name)
        if path.exists():
            return str(path)
    raise BenchmarkError(f"DCMTK {name} not found (apt-get install dcmtk)")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return "  (no log)"
    return "\n".join(f"  | {line}" for line in text)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def poll_until(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    """Poll ``predicate``; return time.perf_counter() at the first truthy answer."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return time.perf_counter()
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            last = exc
        time.sleep(POLL)
    raise BenchmarkError(f"{what}: not reached in {timeout:.0f} s (last error: {last})")


# --- test data -----------------------------------------------------------------------------


def generate_study(folder: Path, count: int, noise_hu: float, seed: int = 1) -> list[Path]:
    """``count`` axial CT slices of a smooth phantom plus Gaussian noise, one series."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float32)
    fov = (xx - 255.5) ** 2 + (yy - 255.5) ** 2 <= 256**2

    def slices() -> Iterator[np.ndarray]:
        for i in range(count):
            t = i / max(count - 1, 1)
            # Body outline and organs change slowly along z.
            ax, ay = 200 + 15 * np.sin(np.pi * t), 150 + 10 * np.sin(np.pi * t)
            r_body = ((xx - 256) / ax) ** 2 + ((yy - 250) / ay) ** 2
            body = r_body <= 1.0
            fat = body & (r_body > 0.82)
            lung_r = 0.8 + 0.2 * np.sin(np.pi * t)
            lungs = (((xx - 180) / (60 * lung_r)) ** 2 + ((yy - 235) / (85 * lung_r)) ** 2
                     <= 1) | (((xx - 332) / (60 * lung_r)) ** 2
                              + ((yy - 235) / (85 * lung_r)) ** 2 <= 1)
            heart = ((xx - 270) / 50) ** 2 + ((yy - 230 - 10 * t) / 45) ** 2 <= 1 - 0.5 * t
            spine_y = 340 + 5 * np.sin(i / 10)
            r_spine = (xx - 256) ** 2 + (yy - spine_y) ** 2
            cortex = (r_spine <= 24**2) & (r_spine > 18**2)
            marrow = r_spine <= 18**2
            table = (yy >= 415) & (yy <= 425) & (np.abs(xx - 256) <= 230)

            hu = np.full((ROWS, COLUMNS), -1000.0, dtype=np.float32)
            hu[body] = 45 + 10 * np.cos(xx[body] / 40) * np.sin(yy[body] / 55)  # soft tissue
            hu[fat] = -90
            hu[lungs] = -840 + 30 * ((yy[lungs] - 150) / 170)  # denser at the back
            hu[heart] = 50
            hu[marrow] = 250
            hu[cortex] = 900
            hu[table] = 200
            hu += rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)
            stored = np.clip(np.rint(hu) + 1024, 0, 4095)
            stored[~fov] = 0  # padding outside the reconstruction circle
            yield stored.astype(np.uint16)

    return write_ct_series(folder, slices(), patient_name="BENCHMARK^REPLICATION",
                           patient_id="REPL-0001", accession="REPL0001")


def zstd_ratio(paths: list[Path]) -> tuple[int, int]:
    raw = comp = 0
    for path in paths:
        data = path.read_bytes()
        body, _ = encode(data, transfer_syntax(path))
        raw += len(data)
        comp += len(body)
    return raw, comp


# --- (a) loopback --------------------------------------------------------------------------




def cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise BenchmarkError(f"pacsmesh {' '.join(args)}: {out.stderr.strip()[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def timed(cmd: list[str], log: Path, timeout: float, what: str) -> tuple[float, float]:
    """Run ``cmd``; return (start, end) perf_counter times. Raises on failure."""
    with log.open("wb") as fh:
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"{what} timed out:\n{log_tail(log)}") from None
        t1 = time.perf_counter()
    if rc != 0:
        raise BenchmarkError(f"{what} exited with {rc}:\n{log_tail(log)}")
    return t0, t1


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


@dataclass
class Result:
    cstore_s: float  # plain storescu -> storescp
    ingest_s: float  # storescu -> node A
    after_s: float  # end of storescu -> B holds N and A's outbox is empty
    total_s: float  # start of storescu -> same


def loopback(files_dir: Path, n: int, work: Path) -> Result:
    storescu, storescp = dcmtk("storescu"), dcmtk("storescp")
    # Reference: storescu -> storescp.
    out = work / "storescp-out"
    out.mkdir(parents=True)
    port = free_port()
    with (work / "storescp.log").open("wb") as log:
        scp = subprocess.Popen([storescp, "-od", str(out), "-aet", STORESCP_AET, str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        poll_until("storescp listening", lambda: subprocess.run(
            [dcmtk("echoscu"), "-aec", STORESCP_AET, "-to", "2", "127.0.0.1", str(port)],
            capture_output=True).returncode == 0, 20)
        t0, t1 = timed([storescu, "-aet", CALLING_AET, "-aec", STORESCP_AET, "+sd",
                        "127.0.0.1", str(port), str(files_dir)],
                       work / "storescu-ref.log", 120 + n, "storescu -> storescp")
    finally:
        stop(scp)
    if count_files(out) != n:
        raise BenchmarkError(f"storescp wrote {count_files(out)} files, expected {n}")
    cstore = t1 - t0

    a = NodeProcess(work / "a", aet="NODEA", extra_args=("--replicas", "2"))
    cli("mesh", "init", "--data-dir", str(a.data_dir), "--aet", "NODEA")
    token = cli("mesh", "invite", "--data-dir", str(a.data_dir), "--no-seed", "--uses", "1")
    b = NodeProcess(work / "b", aet="NODEB", extra_args=(
        "--replicas", "2", "--join", token, "--peer", f"127.0.0.1:{a.mesh_port}"))
    try:
        a.start()
        b.start()
        poll_until("B alive at A", lambda: any(
            p["aet"] == "NODEB" and p["state"] == "alive"
            for p in http_get_json(a.http_port, "/api/peers")), 60)
        t0, t1 = timed([storescu, "-aet", CALLING_AET, "-aec", "NODEA", "+sd", "127.0.0.1",
                        str(a.dicom_port), str(files_dir)],
                       work / "storescu-a.log", 120 + n, "storescu -> node A")
        done = poll_until("B holds the study, A's outbox empty", lambda: (
            http_get_json(b.http_port, "/api/status")["instances"] == n
            and http_get_json(a.http_port, "/api/status")["outbox_depth"] == 0), 600)
        if http_get_json(a.http_port, "/api/status")["instances"] != n:
            raise BenchmarkError("node A does not hold exactly N instances")
    except BenchmarkError as exc:
        raise BenchmarkError(
            f"{exc}\nA:\n{log_tail(a.log_path)}\nB:\n{log_tail(b.log_path)}"
        ) from None
    finally:
        b.stop()
        a.stop()
    return Result(cstore, t1 - t0, done - t1, done - t0)


# --- (b) limited link between namespaces ---------------------------------------------------


def tc(*args: str) -> None:
    out = subprocess.run(["tc", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchmarkError(f"tc {' '.join(args)}: {out.stderr.strip()}")


def limited_link(files_dir: Path, n: int, work: Path) -> Result:
    storescu, storescp, echoscu = dcmtk("storescu"), dcmtk("storescp"), dcmtk("echoscu")
    with Network() as net:
        host_a, host_b = net.add_host("a"), net.add_host("b")
        for host in (host_a, host_b):
            # Root-side egress of each veth: traffic into that namespace (both directions).
            tc("qdisc", "add", "dev", host.veth, "root", "tbf", *TBF)

        # Plain C-STORE: storescu in A -> storescp in B, over the link.
        out = work / "ns-storescp-out"
        out.mkdir(parents=True)
        scp = host_b.spawn([storescp, "-od", str(out), "-aet", STORESCP_AET,
                            str(STORESCP_NS_PORT)], work / "ns-storescp.log")
        try:
            poll_until("storescp in B listening", lambda: host_a.run(
                echoscu, "-aec", STORESCP_AET, "-to", "2", host_b.address,
                str(STORESCP_NS_PORT)).returncode == 0, 20)
            t0 = time.perf_counter()
            res = host_a.run(storescu, "-aet", CALLING_AET, "-aec", STORESCP_AET, "+sd",
                             host_b.address, str(STORESCP_NS_PORT), str(files_dir),
                             timeout=600)
            cstore = time.perf_counter() - t0
        finally:
            stop(scp)
        if res.returncode != 0 or count_files(out) != n:
            raise BenchmarkError(f"storescu A -> storescp B failed ({res.returncode}, "
                                 f"{count_files(out)}/{n} files): {res.stderr[-1500:]}")

        # PACSmesh: A founds the mesh, B joins with a token whose seed is A:11113.
        a_dir, b_dir = work / "ns-a", work / "ns-b"
        ns_init_mesh(a_dir, "NODEA")
        token = ns_invite(a_dir, f"{host_a.address}:11113", uses=1)
        a = NamespacedNode(host_a, a_dir, "NODEA", ("--replicas", "2", "--no-mdns"))
        b = NamespacedNode(host_b, b_dir, "NODEB",
                           ("--replicas", "2", "--no-mdns", "--join", token))
        try:
            a.start()
            poll_until("node A up", lambda: bool(a.get_json("/api/status")), 60)
            b.start()
            poll_until("node B up", lambda: bool(b.get_json("/api/status")), 60)
            poll_until("B alive at A", lambda: a.peers().get("NODEB", {}).get("state")
                       == "alive", 90)
            poll_until("node A DICOM", lambda: host_a.run(
                echoscu, "-aec", "NODEA", "-to", "2", "127.0.0.1", "11112").returncode == 0,
                30)
            t0 = time.perf_counter()
            res = host_a.run(storescu, "-aet", CALLING_AET, "-aec", "NODEA", "+sd",
                             "127.0.0.1", "11112", str(files_dir), timeout=600)
            t1 = time.perf_counter()
            if res.returncode != 0:
                raise BenchmarkError(f"storescu -> node A failed: {res.stderr[-1500:]}")
            done = poll_until("B holds the study, A's outbox empty", lambda: (
                b.get_json("/api/status")["instances"] == n
                and a.get_json("/api/status")["outbox_depth"] == 0), 900)
        except BenchmarkError as exc:
            raise BenchmarkError(f"{exc}\nA:\n{log_tail(a.log_path)}\n"
                                 f"B:\n{log_tail(b.log_path)}") from None
        finally:
            b.stop()
            a.stop()
    return Result(cstore, t1 - t0, done - t1, done - t0)


# --- (c) pydicom-data ------------------------------------------------------------------------


def sample_ratio() -> tuple[int, int, int]:
    plain = UNCOMPRESSED - {DeflatedExplicitVRLittleEndian}
    paths = []
    for path in one_file_per_instance(dcmtk_only=False):
        if transfer_syntax(path) not in plain:
            continue
        with contextlib.suppress(Exception):
            if "PixelData" in dcmread(path, stop_before_pixels=False, specific_tags=["PixelData"]):
                paths.append(path)
    raw, comp = zstd_ratio(paths)
    return len(paths), raw, comp


# --- report --------------------------------------------------------------------------------


def row(label: str, value: str, note: str = "") -> str:
    return f"  {label:<58} {value:>14}  {note}"


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pacsmesh-repl-"))
    try:
        yield path
    finally:
        if keep:
            print(f"work folder kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200,
                        help="instances in the loopback study (default 200, ~105 MB)")
    parser.add_argument("--link-count", type=int, default=60,
                        help="instances in the 20 Mbit/s study (default 60, ~31 MB)")
    parser.add_argument("--noise", type=float, default=8.0,
                        help="Gaussian noise of the phantom, HU (default 8)")
    parser.add_argument("--skip-loopback", action="store_true")
    parser.add_argument("--skip-link", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args(argv)

    os.chdir(REPO_ROOT)  # the nodes run as ``python -m node.cli``
    # DCMTK leaves Nagle on without this and every small C-STORE response then waits for
    # a delayed ACK; set for every DCMTK process (storescu and storescp) alike.
    os.environ["TCP_NODELAY"] = "1"
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        os.environ.pop(var, None)
    for k in [k for k in os.environ if k.startswith("PACSMESH_")]:
        del os.environ[k]

    command = shlex.join(sys.orig_argv)
    lines = [f"command: {command}"]
    failures: list[str] = []
    with workdir(args.keep) as work:
        print(f"generating {args.count} + {args.link_count} CT instances ...", flush=True)
        big = generate_study(work / "study-big", args.count, args.noise, seed=1)
        small = generate_study(work / "study-small", args.link_count, args.noise, seed=2)
        big_mb = sum(p.stat().st_size for p in big) / MB
        small_mb = sum(p.stat().st_size for p in small) / MB
        raw, comp = zstd_ratio(big)
        lines.append(
            f"study: synthetic CT phantom 512x512 uint16 (12 bits stored), noise sigma "
            f"{args.noise:g} HU, Explicit VR LE; zstd-3 ratio on it {raw / comp:.2f}x")

        lines.append("")
        lines.append(row("(a) loopback, 2-node mesh, replicas 2", "",
                         f"{args.count} instances, {big_mb:.1f} MB"))
        if args.skip_loopback:
            lines.append(row("skipped", ""))
        else:
            print("(a) loopback ...", flush=True)
            try:
                r = loopback(work / "study-big", args.count, work / "loopback")
            except BenchmarkError as exc:
                failures.append(f"(a): {exc}")
                lines.append(row("FAILED", "", str(exc).splitlines()[0]))
            else:
                lines += [
                    row("storescu -> storescp (reference)", f"{r.cstore_s:8.2f} s",
                        f"{big_mb / r.cstore_s:7.1f} MB/s"),
                    row("storescu -> node A (ingest)", f"{r.ingest_s:8.2f} s",
                        f"{big_mb / r.ingest_s:7.1f} MB/s"),
                    row("replication: storescu end -> B has N, A outbox 0",
                        f"{r.after_s:8.2f} s", f"{big_mb / r.after_s:7.1f} MB/s"),
                    row("replication: storescu start -> B has N, A outbox 0",
                        f"{r.total_s:8.2f} s", f"{big_mb / r.total_s:7.1f} MB/s"),
                ]

        lines.append("")
        lines.append(row("(b) veth ns A -> ns B, tbf " + " ".join(TBF), "",
                         f"{args.link_count} instances, {small_mb:.1f} MB"))
        reason = netns_available()
        if args.skip_link or reason is not None:
            lines.append(row("skipped", "", reason or ""))
        else:
            print("(b) limited link ...", flush=True)
            try:
                r = limited_link(work / "study-small", args.link_count, work / "link")
            except BenchmarkError as exc:
                failures.append(f"(b): {exc}")
                lines.append(row("FAILED", "", str(exc).splitlines()[0]))
            else:
                lines += [
                    row("plain C-STORE: storescu (ns A) -> storescp (ns B)",
                        f"{r.cstore_s:8.2f} s", f"{small_mb / r.cstore_s:7.2f} MB/s"),
                    row("storescu -> node A inside ns A (local ingest)",
                        f"{r.ingest_s:8.2f} s", ""),
                    row("PACSmesh A->B: storescu end -> B has N, outbox 0",
                        f"{r.after_s:8.2f} s",
                        f"{r.after_s / r.cstore_s:5.2f}x C-STORE  (target <= 0.60x: "
                        f"{'met' if r.after_s <= 0.6 * r.cstore_s else 'NOT met'})"),
                    row("PACSmesh A->B: storescu start -> B has N, outbox 0",
                        f"{r.total_s:8.2f} s",
                        f"{r.total_s / r.cstore_s:5.2f}x C-STORE  (target <= 0.60x: "
                        f"{'met' if r.total_s <= 0.6 * r.cstore_s else 'NOT met'})"),
                ]

        lines.append("")
        print("(c) compression ratio ...", flush=True)
        count, raw, comp = sample_ratio()
        ratio = raw / comp
        lines += [
            row("(c) zstd-3 (replication.transfer.encode), pydicom-data", "",
                f"{count} uncompressed images, {raw / MB:.2f} MB"),
            row("total bytes / compressed bytes", f"{ratio:8.2f} x",
                f"target >= 2x: {'met' if ratio >= 2 else 'NOT met'}"),
        ]

    print()
    print("\n".join(lines))
    for failure in failures:
        print(f"\n{failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
