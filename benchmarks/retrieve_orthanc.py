"""C-GET and C-MOVE of one CT study from PACSmesh and from Orthanc, side by side.

The same N generated 512x512 CT instances (Explicit VR Little Endian) are stored in a
PACSmesh node and in Orthanc 1.10 (both on loopback, every DCMTK process and Orthanc
with TCP_NODELAY=1). Each round then times, for both servers in turn (the order rotates):

- ``getscu`` of the study, written bit for bit (``+B``): the stored syntax;
- ``movescu`` of the study to a ``storescp`` that takes anything: the stored syntax;
- ``movescu`` to a ``storescp`` that takes only Implicit VR Little Endian: transcoded.

Each figure is the wall time of the DCMTK requester, and the time until its first file
appeared. The report gives the median and range over the rounds, and the ratio
Orthanc/PACSmesh pair by pair (above 1: PACSmesh is faster). Run from the repository root:

    .venv/bin/python -m benchmarks.retrieve_orthanc --count 200 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.ingest import find_dcmtk, generate_ct_series
from tests.orthanc import OrthancProcess
from tests.support import NodeProcess, free_port

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
CASES = ("C-GET", "C-MOVE", "C-MOVE to Implicit VR LE")


class Orthanc(OrthancProcess):
    def config(self) -> dict[str, Any]:
        # movescu's calling AE is not one of its modalities.
        return {**super().config(), "DicomAlwaysAllowMove": True}


@dataclass
class Destination:
    """A DCMTK storescp for C-MOVE, emptied before each run."""

    aet: str
    folder: Path
    implicit_only: bool
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, storescp: str) -> Destination:
        self.port = free_port()
        self.folder.mkdir(parents=True)
        args = [storescp, "-aet", self.aet, "-od", str(self.folder), "+B"]
        args += ["+xi"] if self.implicit_only else ["+xa"]
        self.proc = subprocess.Popen([*args, str(self.port)], env=NODELAY,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def empty(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def timed(cmd: list[str], folder: Path, want: int) -> tuple[float, float]:
    """(seconds to the first file in ``folder``, seconds in all) for one requester run."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=NODELAY, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    first = None
    while proc.poll() is None:
        if first is None and any(folder.iterdir()):
            first = time.perf_counter() - started
        time.sleep(0.001)
    total = time.perf_counter() - started
    # storescp may still be writing the last file when movescu has its final response.
    deadline = time.monotonic() + 10
    while sum(1 for _ in folder.iterdir()) < want and time.monotonic() < deadline:
        time.sleep(0.005)
    got = sum(1 for _ in folder.iterdir())
    if proc.returncode != 0 or got != want:
        raise RuntimeError(f"{cmd[0]}: exit {proc.returncode}, {got} of {want} files:\n"
                           f"{proc.stderr.read().decode(errors='replace') if proc.stderr else ''}")
    return first if first is not None else total, total


def serve(name: str, aet: str, port: int, study: str, tools: dict[str, str], work: Path,
          destinations: dict[str, Destination], count: int) -> Callable[[str], tuple[
              float, float]]:
    """A function that runs one case against one server."""
    def run(case: str) -> tuple[float, float]:
        query = ["-S", "-aec", aet, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(port)]
        if case == "C-GET":
            out = work / f"get-{name}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            return timed([tools["getscu"], "+B", "-od", str(out), *query], out, count)
        dest = destinations["implicit" if "Implicit" in case else "all"]
        dest.empty()
        return timed([tools["movescu"], "-aem", dest.aet, *query], dest.folder, count)
    return run


def report(figures: dict[tuple[str, str], list[tuple[float, float]]], cases: list[str],
           count: int) -> None:
    def span(values: list[float], unit: float) -> str:
        return (f"{statistics.median(values) * unit:8.2f} "
                f"[{min(values) * unit:.2f}-{max(values) * unit:.2f}]")

    rounds = len(figures[(cases[0], "PACSmesh")])
    print(f"\n{count} instances of 512x512 CT, {rounds} rounds; median [range]")
    print(f"{'case':26} {'server':9} {'total s':>22} {'first image ms':>24}"
          f" {'per instance ms':>16}")
    for case in cases:
        for server in ("PACSmesh", "Orthanc"):
            rows = figures[(case, server)]
            totals, firsts = [t for _, t in rows], [f for f, _ in rows]
            print(f"{case:26} {server:9} {span(totals, 1):>22} {span(firsts, 1000):>24}"
                  f" {statistics.median(totals) * 1000 / count:16.2f}")
        ratios = [o[1] / p[1] for p, o in zip(figures[(case, "PACSmesh")],
                                              figures[(case, "Orthanc")], strict=True)]
        first = [o[0] / p[0] for p, o in zip(figures[(case, "PACSmesh")],
                                             figures[(case, "Orthanc")], strict=True)]
        print(f"{'':26} ratio Orthanc/PACSmesh: total {span(ratios, 1)},"
              f" first image {span(first, 1)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated subset of: " + ", ".join(CASES))
    args = parser.parse_args()
    cases = [c for c in CASES if c in args.cases.split(",")]
    tools = {t: find_dcmtk(t) for t in ("getscu", "movescu", "storescp", "storescu")}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        files = generate_ct_series(work / "study", args.count, seed=14)
        study = subprocess.run(
            ["dcmdump", "+P", "StudyInstanceUID", str(files[0])], capture_output=True,
            text=True, check=True).stdout.split("[")[1].split("]")[0]
        destinations = {
            "all": Destination("ALLSYNTAXES", work / "dest-all", implicit_only=False),
            "implicit": Destination("IMPLICIT", work / "dest-implicit", implicit_only=True),
        }
        for dest in destinations.values():
            dest.start(tools["storescp"])
            stack.callback(dest.stop)
        table = {d.aet: ("127.0.0.1", d.port) for d in destinations.values()}
        node = NodeProcess(data_dir=work / "node", modalities=tuple(
            f"{aet}@{host}:{port}" for aet, (host, port) in table.items())).start()
        stack.callback(node.stop)
        orthanc = Orthanc(work / "orthanc", modalities=table).start()
        stack.callback(orthanc.stop)
        for aet, port in (("PACSMESH", node.dicom_port), ("ORTHANC", orthanc.dicom_port)):
            subprocess.run([tools["storescu"], "-aec", aet, "+sd", "127.0.0.1", str(port),
                            str(work / "study")], env=NODELAY, check=True,
                           capture_output=True)
        runners = {
            "PACSmesh": serve("pacsmesh", "PACSMESH", node.dicom_port, study, tools, work,
                              destinations, args.count),
            "Orthanc": serve("orthanc", "ORTHANC", orthanc.dicom_port, study, tools, work,
                             destinations, args.count),
        }
        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        try:
            for case in cases:
                runners["PACSmesh"](case)  # warm-up: page cache, first association
                runners["Orthanc"](case)
            for round_no in range(args.rounds):
                for case in cases:
                    order = list(runners) if round_no % 2 == 0 else list(reversed(runners))
                    for server in order:
                        figures.setdefault((case, server), []).append(runners[server](case))
        except RuntimeError:
            print(f"PACSmesh's log, the end:\n{node.log()[-4000:]}", file=sys.stderr)
            raise
        report(figures, cases, args.count)


if __name__ == "__main__":
    main()
