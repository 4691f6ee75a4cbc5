"""Ingest benchmark: DCMTK storescu sends N CT instances to PACSmesh, Orthanc and storescp.

The same N generated 512x512 16-bit CT instances (one study, one series, Explicit VR
Little Endian Part 10 files) go, in one association per run, from DCMTK ``storescu`` to:

1. a PACSmesh node (``python -m node.cli run``): store (fsync) + index (SQLite);
2. Orthanc, with its own SQLite index and uncompressed storage (defaults otherwise,
   which include fsync of every stored file);
3. DCMTK ``storescp``, which only writes files (no index, no fsync): a ceiling.

Only the wall time of the ``storescu`` process is measured, never server start-up.
Every run starts a fresh server on an empty archive, so each one stores N new
instances, and checks afterwards that the server holds exactly N. The targets are run
``--rounds`` times, interleaved and in a rotating order, because absolute times drift
on a small machine; the report gives the median per target and the ratios
PACSmesh/Orthanc (target: >= 1) and PACSmesh/storescp. Everything stays on loopback.

Run from the repository root:

    .venv/bin/python benchmarks/ingest.py --count 200 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

# The benchmarks folder holds discovery.py, which would shadow the ``discovery`` package
# the node imports: keep only the repository root, as benchmarks/discovery.py does.
SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != SCRIPT_DIR]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import http_get_json, write_ct_series  # noqa: E402
from node import __version__ as PACSMESH_VERSION  # noqa: E402

HOST = "127.0.0.1"
CALLING_AET = "BENCHSCU"
PACSMESH_AET = "PACSMESH"
ORTHANC_AET = "ORTHANC"
STORESCP_AET = "STORESCP"
ROWS = COLUMNS = 512
START_TIMEOUT = 60.0  # seconds for a server to answer after spawn
STOP_TIMEOUT = 30.0  # seconds after SIGTERM before SIGKILL

# DCMTK (and so Orthanc, which embeds it) leaves Nagle's algorithm on unless TCP_NODELAY
# is set, and each small C-STORE response then waits for a delayed ACK (~40 ms). Every
# DCMTK process gets it, so the client side is the same for all three targets.
DCMTK_ENV = {"TCP_NODELAY": "1"}


class BenchmarkError(RuntimeError):
    """A run could not be measured or its result was wrong; the message says why."""


# --- tools and versions --------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    storescu: str
    storescp: str
    echoscu: str
    orthanc: str


def find_dcmtk(name: str) -> str:
    """The DCMTK executable ``name``, skipping pynetdicom's same-named scripts in the venv."""
    venv_bin = Path(sys.prefix, "bin").resolve()
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        if not folder or Path(folder).resolve() == venv_bin:
            continue
        path = shutil.which(name, path=folder)
        if path and "dcmtk" in first_line([path, "--version"]).lower():
            return path
    raise BenchmarkError(f"DCMTK {name} not found on PATH (apt-get install dcmtk)")


def find_orthanc() -> str:
    path = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise BenchmarkError("Orthanc not found on PATH or in /usr/sbin (apt-get install orthanc)")
    return path


def first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


# --- test data -----------------------------------------------------------------------------


def generate_ct_series(folder: Path, count: int, seed: int) -> list[Path]:
    """Write ``count`` CT slices of one series as Part 10 files; return their paths."""
    rng = np.random.default_rng(seed)
    # A water-filled ellipse (the body) in air with a brighter disc (the spine) that
    # drifts from slice to slice, plus noise: pixel data that looks like a scan, so
    # nothing downstream can take shortcuts on constant or all-zero frames.
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float32)
    body = ((xx - 256) / 220) ** 2 + ((yy - 256) / 170) ** 2 <= 1.0

    def slices() -> Iterator[np.ndarray]:
        for i in range(count):
            spine_y = 330 + 20 * np.sin(i / 15)
            spine = (xx - 256) ** 2 + (yy - spine_y) ** 2 <= 30**2
            hu = np.where(body, 40, -1000) + np.where(spine, 660, 0)
            noise = rng.integers(-25, 26, size=(ROWS, COLUMNS))
            yield np.clip(hu + noise + 1024, 0, 4095).astype(np.uint16)

    return write_ct_series(folder, slices(), patient_name="BENCHMARK^INGEST",
                           patient_id="BENCH-0001", accession="BENCH0001")


# --- processes -----------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports free on loopback right now; all sockets stay open until the end, so distinct."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
    return ports


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # A PACSMESH_* variable in the caller's shell would silently change the node's config.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSMESH_")}
    env.update(DCMTK_ENV)
    env.update(extra or {})
    return env


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return "  (no log)"
    return "\n".join(f"  | {line}" for line in text) or "  (empty log)"


def stop(proc: subprocess.Popen[bytes], what: str) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"  warning: {what} ignored SIGTERM for {STOP_TIMEOUT:.0f} s; killed",
              file=sys.stderr)
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def server(
    what: str, cmd: Sequence[str], log_path: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` for the duration of the block; SIGTERM (then SIGKILL) it on the way out."""
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C reaches only this script, which then stops the
        # server in order instead of racing it.
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=cwd, env=child_env(), start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop(proc, what)




def dicom_echo(tools: Tools, aet: str, port: int) -> bool:
    cmd = [tools.echoscu, "-aet", CALLING_AET, "-aec", aet, "-to", "5", HOST, str(port)]
    try:
        return subprocess.run(cmd, capture_output=True, env=child_env(), timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait_ready(
    what: str, proc: subprocess.Popen[bytes], log_path: Path, ready: Callable[[], bool]
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise BenchmarkError(
                f"{what} exited with status {proc.returncode} before answering:\n"
                f"{log_tail(log_path)}"
            )
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"{what} did not answer within {START_TIMEOUT:.0f} s:\n{log_tail(log_path)}"
            )
        time.sleep(0.05)


def storescu_cmd(tools: Tools, aet: str, port: int | str, files_dir: Path) -> list[str]:
    return [tools.storescu, "-aet", CALLING_AET, "-aec", aet, "+sd", HOST, str(port),
            str(files_dir)]


def timed_storescu(tools: Tools, aet: str, port: int, files_dir: Path, log_path: Path,
                   count: int) -> float:
    """Send every file, one association per sender folder (``files_dir``'s subfolders,
    all at once, as several modalities do; or ``files_dir`` itself in one association);
    return the wall time until the last storescu process ends."""
    folders = sorted(p for p in files_dir.iterdir() if p.is_dir()) or [files_dir]
    logs = [log_path.with_name(f"{log_path.stem}-{n}{log_path.suffix}")
            for n in range(len(folders))] if len(folders) > 1 else [log_path]
    handles = [log.open("wb") for log in logs]
    try:
        t0 = time.perf_counter()
        procs = [subprocess.Popen(storescu_cmd(tools, aet, port, folder),
                                  stdin=subprocess.DEVNULL, stdout=handle,
                                  stderr=subprocess.STDOUT, env=child_env())
                 for folder, handle in zip(folders, handles, strict=True)]
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=60 + count))
            except subprocess.TimeoutExpired:
                for other in procs:
                    other.kill()
                raise BenchmarkError(
                    f"storescu to {aet} timed out:\n{log_tail(logs[0])}") from None
        elapsed = time.perf_counter() - t0
    finally:
        for handle in handles:
            handle.close()
    for code, log in zip(codes, logs, strict=True):
        if code != 0:
            raise BenchmarkError(
                f"storescu to {aet} exited with status {code}:\n{log_tail(log)}")
    return elapsed


def expect_count(what: str, got: int, want: int, log_path: Path) -> None:
    if got != want:
        raise BenchmarkError(
            f"{what} holds {got} instances after the run, expected {want}:\n{log_tail(log_path)}"
        )


# --- the three targets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    tools: Tools
    files_dir: Path
    count: int
    mesh_port: bool  # whether the node takes --mesh-port
    work: Path  # an empty folder for this run only
    node_args: tuple[str, ...] = ()  # extra `pacsmesh run` options


def node_takes_mesh_port() -> bool:
    """Whether this node version listens on a mesh port (and so takes ``--mesh-port``)."""
    out = subprocess.run([sys.executable, "-m", "node.cli", "run", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, env=child_env(), timeout=60)
    if out.returncode != 0:
        raise BenchmarkError(f"the node does not start: {out.stderr.strip()[-2000:]}")
    return "--mesh-port" in out.stdout


def pacsmesh_cmd(data_dir: Path | str, dicom_port: int | str, http_port: int | str,
                 mesh_port: int | str | None) -> list[str]:
    cmd = [sys.executable, "-m", "node.cli", "run", "--data-dir", str(data_dir),
           "--aet", PACSMESH_AET, "--bind", HOST, "--dicom-port", str(dicom_port),
           "--http-port", str(http_port), "--no-mdns"]
    if mesh_port is not None:
        # Its default is one fixed port, which another node on this machine may hold.
        cmd += ["--mesh-port", str(mesh_port)]
    return cmd


def orthanc_config(work: Path | str, dicom_port: int | str, http_port: int | str) -> dict[str, Any]:
    return {
        "Name": "ingest-benchmark",
        "StorageDirectory": f"{work}/storage",
        "IndexDirectory": f"{work}/index",
        "StorageCompression": False,
        "DicomAet": ORTHANC_AET,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
    }


def storescp_cmd(tools: Tools, out: Path | str, port: int | str) -> list[str]:
    return [tools.storescp, "--output-directory", str(out), "-aet", STORESCP_AET, str(port)]


def run_pacsmesh(run: Run) -> float:
    dicom_port, http_port, mesh_port = free_ports(3)
    log_path = run.work / "server.log"
    cmd = pacsmesh_cmd(run.work / "data", dicom_port, http_port,
                       mesh_port if run.mesh_port else None) + list(run.node_args)
    with server("PACSmesh", cmd, log_path, cwd=REPO_ROOT) as proc:
        wait_ready("PACSmesh", proc, log_path,
                   lambda: bool(http_get_json(http_port, "/api/status")))
        wait_ready("PACSmesh DICOM", proc, log_path,
                   lambda: dicom_echo(run.tools, PACSMESH_AET, dicom_port))
        elapsed = timed_storescu(run.tools, PACSMESH_AET, dicom_port, run.files_dir,
                                 run.work / "storescu.log", run.count)
        stored = int(http_get_json(http_port, "/api/status")["instances"])
        expect_count("PACSmesh", stored, run.count, log_path)
    return elapsed


def run_orthanc(run: Run) -> float:
    dicom_port, http_port = free_ports(2)
    log_path = run.work / "server.log"
    config_path = run.work / "orthanc.json"
    config_path.write_text(json.dumps(orthanc_config(run.work, dicom_port, http_port), indent=2))
    with server("Orthanc", [run.tools.orthanc, str(config_path)], log_path) as proc:
        wait_ready("Orthanc", proc, log_path, lambda: bool(http_get_json(http_port, "/system")))
        wait_ready("Orthanc DICOM", proc, log_path,
                   lambda: dicom_echo(run.tools, ORTHANC_AET, dicom_port))
        elapsed = timed_storescu(run.tools, ORTHANC_AET, dicom_port, run.files_dir,
                                 run.work / "storescu.log", run.count)
        stored = int(http_get_json(http_port, "/statistics")["CountInstances"])
        expect_count("Orthanc", stored, run.count, log_path)
    return elapsed


def run_storescp(run: Run) -> float:
    (port,) = free_ports(1)
    log_path = run.work / "server.log"
    out = run.work / "received"
    out.mkdir()
    with server("storescp", storescp_cmd(run.tools, out, port), log_path) as proc:
        wait_ready("storescp", proc, log_path,
                   lambda: dicom_echo(run.tools, STORESCP_AET, port))
        elapsed = timed_storescu(run.tools, STORESCP_AET, port, run.files_dir,
                                 run.work / "storescu.log", run.count)
    expect_count("storescp", sum(1 for p in out.iterdir() if p.is_file()), run.count, log_path)
    return elapsed


def run_pacsmesh_sealed(run: Run) -> float:
    return run_pacsmesh(replace(run, node_args=(*run.node_args, "--encrypt-at-rest")))


TARGETS: dict[str, Callable[[Run], float]] = {
    "PACSmesh": run_pacsmesh,
    "Orthanc": run_orthanc,
    "storescp": run_storescp,
}
SEALED = "PACSmesh+at-rest"  # a target only with --encrypt-at-rest
AETS = {"PACSmesh": PACSMESH_AET, "Orthanc": ORTHANC_AET, "storescp": STORESCP_AET}


# --- report --------------------------------------------------------------------------------


def report(times: dict[str, list[float]], count: int, mbytes: float, rounds: int,
           senders: int = 1) -> None:
    """Per-target rates and medians; after an interrupt, whatever runs were completed."""
    names = list(times)
    cols = max(len(times[n]) for n in names)
    print()
    how = "one association" if senders == 1 else f"{senders} associations at once"
    print(f"{count} instances ({mbytes:.1f} MB) per run, {how}; "
          f"instances/s = {count} / wall time of storescu; {rounds} rounds")
    round_cols = "".join(f"{'round ' + str(i + 1):>10}" for i in range(cols))
    header = f"{'target':<17}{round_cols}{'median/s':>11}{'MB/s':>8}{'median s':>10}"
    print(header)
    print("-" * len(header))
    medians: dict[str, float] = {}
    for name in names:
        rates = [count / t for t in times[name]]
        if not rates:
            continue
        med = statistics.median(rates)
        medians[name] = med
        cells = "".join(f"{r:>10.1f}" for r in rates) + " " * 10 * (cols - len(rates))
        print(f"{name:<17}{cells}{med:>11.1f}{med * mbytes / count:>8.1f}"
              f"{count / med:>10.2f}")
    if "PACSmesh" not in medians:
        return
    print()
    if SEALED in medians:
        print(f"{SEALED}/PACSmesh {medians[SEALED] / medians['PACSmesh']:5.2f}"
              "  (ingest rate with encryption at rest, relative to without)")
    for other in ("Orthanc", "storescp"):
        if other not in medians:
            continue
        # Same-round ratios pair runs made seconds apart, so they show the spread that
        # machine drift leaves once it mostly cancels out.
        paired = zip(times[other], times["PACSmesh"], strict=False)
        per_round = ", ".join(f"{theirs / ours:.2f}" for theirs, ours in paired)
        ratio = medians["PACSmesh"] / medians[other]
        verdict = ""
        if other == "Orthanc":
            verdict = "  target >= 1.00: " + ("met" if ratio >= 1.0 else "NOT met")
        print(f"PACSmesh/{other:<9} {ratio:5.2f}  (per round: {per_round}){verdict}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200,
                        help="instances sent per run (default: 200)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each runs every target once (default: 3)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the temporary files and archives go (default: the "
                        "system temp dir); it decides which disk, and so the fsync cost")
    parser.add_argument("--seed", type=int, default=1, help="pixel noise seed (default: 1)")
    parser.add_argument("--senders", type=int, default=1,
                        help="storescu processes sending --count instances each, all at"
                        " once, one association each (default: 1)")
    parser.add_argument("--encrypt-at-rest", action="store_true",
                        help=f"also run a node with encryption at rest, as '{SEALED}'")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    signal.signal(signal.SIGTERM, _interrupt)
    targets = dict(TARGETS)
    if args.encrypt_at_rest:
        targets[SEALED] = run_pacsmesh_sealed
    times: dict[str, list[float]] = {name: [] for name in targets}
    mbytes = 0.0
    try:
        tools = Tools(find_dcmtk("storescu"), find_dcmtk("storescp"), find_dcmtk("echoscu"),
                      find_orthanc())
        print(f"command: {shlex.join(sys.orig_argv)}")
        print(f"PACSmesh {PACSMESH_VERSION} (Python {platform.python_version()}); "
              f"{first_line([tools.orthanc, '--version']).replace(tools.orthanc, 'Orthanc')}; "
              f"{first_line([tools.storescp, '--version']).strip('$ ')}")
        print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}")
        with tempfile.TemporaryDirectory(prefix="pacsmesh-ingest-", dir=args.work_dir) as tmp:
            root = Path(tmp)
            files_dir = root / "files"
            files_dir.mkdir()
            t0 = time.monotonic()
            paths = []
            for sender in range(args.senders):
                folder = files_dir / f"sender{sender + 1}" if args.senders > 1 else files_dir
                folder.mkdir(exist_ok=True)
                paths += generate_ct_series(folder, args.count, args.seed + sender)
            mbytes = sum(p.stat().st_size for p in paths) / 1e6
            print(f"generated {args.senders} x {args.count} CT instances ({mbytes:.1f} MB)"
                  f" in {files_dir} in {time.monotonic() - t0:.1f} s")
            print(f"client:   {shlex.join(storescu_cmd(tools, 'AET', 'PORT', files_dir))}"
                  " (env TCP_NODELAY=1)")
            mesh_port = node_takes_mesh_port()
            node_cmd = pacsmesh_cmd("RUN/data", "PORT", "HTTP", "MESH" if mesh_port else None)
            print(f"PACSmesh: {shlex.join(node_cmd)}")
            print(f"Orthanc:  TCP_NODELAY=1 {shlex.quote(tools.orthanc)} RUN/orthanc.json = "
                  f"{json.dumps(orthanc_config('RUN', 'PORT', 'HTTP'))}")
            print(f"storescp: {shlex.join(storescp_cmd(tools, 'RUN/received', 'PORT'))}"
                  " (env TCP_NODELAY=1)")
            print("RUN is a fresh folder per run and target; PORT, HTTP, MESH fresh free ports")
            os.sync()
            names = list(targets)
            total = args.count * args.senders
            for rnd in range(args.rounds):
                # Rotate the order so no target always runs first (cold caches) or right
                # after another one's disk writes.
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for name in order:
                    work = root / f"round{rnd + 1}-{name}"
                    work.mkdir()
                    try:
                        elapsed = targets[name](Run(tools, files_dir, total, mesh_port, work))
                    finally:
                        shutil.rmtree(work, ignore_errors=True)
                        # storescp never fsyncs: flush its (and the deletion's) dirty
                        # pages now, not during the next target's timed run.
                        os.sync()
                    times[name].append(elapsed)
                    print(f"round {rnd + 1}: {name:<16} {elapsed:6.2f} s  "
                          f"{total / elapsed:7.1f} instances/s", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, temporary files removed", file=sys.stderr)
        report(times, args.count * args.senders, mbytes, args.rounds, args.senders)
        return 130
    except BenchmarkError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    report(times, args.count * args.senders, mbytes, args.rounds, args.senders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
