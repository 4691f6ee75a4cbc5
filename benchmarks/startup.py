"""Start-up to the first C-ECHO, empty and with a filled archive.

Fills a data dir through the real ingest path (``Archive.ingest``: temp file, fsync,
rename, index row) with ``--instances`` small instances (8x8 CT, studies of 100), then
times ``pacsmesh run`` from process start to the first successful C-ECHO (pynetdicom,
retried every 5 ms), ``--runs`` times each for: an empty data dir (started once before,
so its identity exists), the filled one after a clean stop (SIGTERM), and the filled one
after a SIGKILL. Median and range per case. Then opening the archive alone (index and
recovery, what runs before any port opens), and one read of every holding, what
each anti-entropy round did before it became incremental, against the incremental
rounds of ``replication.owned.OwnedIndex`` at that size.

Each checkout's modules are compiled to bytecode first, as an installed package's are.
With ``--baseline DIR`` (a checkout of the code before, e.g. ``git worktree add``), its
runs alternate with this checkout's on the same data dirs, so both see the same load.

    python -m benchmarks.startup [--instances 20000] [--runs 5] [--keep DIR] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pynetdicom import AE

from node.app import close_archive, open_archive
from node.datadir import INDEX_FILE
from replication.digest import Held, bucket_digests
from replication.owned import OwnedIndex
from replication.placement import owners
from tests.small_instances import fill
from tests.support import free_port

HERE = Path(__file__).resolve().parent.parent


def _echo_ok(port: int) -> bool:
    ae = AE(ae_title="BENCH")
    ae.acse_timeout = ae.network_timeout = 2
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSMESH")
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def start_to_echo(data_dir: Path, log: Path, stop: signal.Signals,
                  source: Path | None = None) -> float:
    """Seconds from spawning ``pacsmesh run`` (of the checkout at ``source``, else this
    one) to its first successful C-ECHO."""
    port = free_port()
    cmd = [sys.executable, "-m", "node.cli", "run", "--data-dir", str(data_dir),
           "--aet", "PACSMESH", "--bind", "127.0.0.1", "--dicom-port", str(port),
           "--http-port", str(free_port()), "--mesh-port", str(free_port()), "--no-mdns"]
    with log.open("ab") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=source,
                                env={**os.environ, "PYTHONPATH": str(source or HERE)})
    try:
        while not _echo_ok(port):
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with {proc.returncode}; see {log}")
            if time.perf_counter() - start > 120:
                raise TimeoutError(f"no C-ECHO answer in 120 s; see {log}")
            time.sleep(0.005)
        return time.perf_counter() - start
    finally:
        proc.send_signal(stop)
        proc.wait(timeout=60)


# What start-up's recovery alone costs, in a process of its own (of either checkout):
# opening the archive, i.e. the index and reconciliation, before any port opens.
_RECOVERY = """
import asyncio, sys, time
from pathlib import Path
from node.app import open_archive
async def main():
    start = time.perf_counter()
    archive, _ = await open_archive(Path(sys.argv[1]))
    print(time.perf_counter() - start)
    await archive.index.close()  # as the old code closes it; retiring nothing is left
asyncio.run(main())
"""


def recovery_seconds(data_dir: Path, source: Path | None = None) -> float:
    out = subprocess.run([sys.executable, "-c", _RECOVERY, str(data_dir)], cwd=source,
                         env={**os.environ, "PYTHONPATH": str(source or HERE)},
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def compile_bytecode(source: Path) -> None:
    """Bytecode for every module, as an installed package has it: else each start
    compiles the whole code base again (and PYTHONDONTWRITEBYTECODE keeps it so)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "node", "discovery",
                    "replication"], cwd=source, check=True)


def summary(times: list[float]) -> str:
    return (f"median {statistics.median(times):.3f} s, range {min(times):.3f}-"
            f"{max(times):.3f} s ({len(times)} runs)")


async def holdings_round(data_dir: Path) -> tuple[float, float, float]:
    """Seconds for one anti-entropy digest of what a peer owns as every round computed it
    before (every row read, filtered by owner, hashed), for the first round of
    ``OwnedIndex`` (the same full read, once per start and per full pass), and for a round
    after it with nothing new (each round after)."""
    members = ["peer-a", "peer-b", "peer-c"]
    archive, _ = await open_archive(data_dir)
    try:
        index = archive.index
        start = time.perf_counter()
        bucket_digests(Held(study, sop, sha) for study, sop, sha in await index.holdings()
                       if "peer-a" in owners(study, members, 2))
        before = time.perf_counter() - start
        owned = OwnedIndex(index)
        start = time.perf_counter()
        await owned.digests("peer-a", members, 2)
        first = time.perf_counter() - start
        start = time.perf_counter()
        await owned.digests("peer-a", members, 2)
        await owned.added_since((owned.generation, 0))  # the stand-in scan's read
        steady = time.perf_counter() - start
    finally:
        await close_archive(archive)
    return before, first, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="reuse (or leave) the filled data dir here")
    parser.add_argument("--baseline", type=Path,
                        help="a checkout of the code before: its runs alternate with these")
    args = parser.parse_args()
    sources: list[tuple[str, Path | None]] = [("this", None)]
    if args.baseline:
        sources.append(("baseline", args.baseline.resolve()))
    for _, source in sources:
        compile_bytecode(source or HERE)
    work = Path(tempfile.mkdtemp(prefix="pacsmesh-startup-"))
    try:
        empty = work / "empty"
        filled = args.keep or work / "filled"
        start_to_echo(empty, work / "empty.log", signal.SIGTERM)  # identity, layout
        if not (filled / INDEX_FILE).exists():
            filled.mkdir(parents=True, exist_ok=True)
            took = asyncio.run(fill(filled, args.instances))
            print(f"filled {args.instances} instances in {took:.1f} s "
                  f"({args.instances / took:.0f}/s)")
        start_to_echo(filled, work / "filled.log", signal.SIGTERM)  # identity
        cases = [("empty, after a clean stop", empty, signal.SIGTERM),
                 (f"{args.instances} instances, after a clean stop", filled, signal.SIGTERM),
                 (f"{args.instances} instances, after SIGKILL", filled, signal.SIGKILL)]
        for name, data_dir, stop in cases:
            times: dict[str, list[float]] = {label: [] for label, _ in sources}
            for _ in range(args.runs):  # alternating: both see the same machine load
                for label, source in sources:
                    times[label].append(
                        start_to_echo(data_dir, work / f"{data_dir.name}.log", stop, source))
            for label, _ in sources:
                print(f"start to first C-ECHO, {name} ({label}): {summary(times[label])}")
        times = {label: [] for label, _ in sources}
        for _ in range(args.runs):
            for label, source in sources:
                times[label].append(recovery_seconds(filled, source))
        for label, _ in sources:
            print(f"opening the archive (index and recovery), {args.instances} instances "
                  f"({label}): {summary(times[label])}")
        before, first, steady = asyncio.run(holdings_round(filled))
        print(f"anti-entropy digest for one peer, every row read (each round before): "
              f"{before * 1000:.0f} ms; first incremental round (a full read): "
              f"{first * 1000:.0f} ms; a round after it, nothing new: {steady * 1000:.2f} ms")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            shutil.rmtree(work / "empty", ignore_errors=True)


if __name__ == "__main__":
    main()
