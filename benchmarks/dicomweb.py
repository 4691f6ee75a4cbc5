"""DICOMweb of PACSmesh and of Orthanc 1.10 with Debian's orthanc-dicomweb, side by side.

The same data goes into a PACSmesh node and into Orthanc (both on loopback, Orthanc with
TCP_NODELAY=1): a 500-instance CT series made from pydicom's ``CT_small.dcm`` (one series,
unique UIDs), and 10,000 studies of one small instance each. Each round then times, for
both servers in turn (the order alternates), with the Python ``dicomweb-client`` over one
keep-alive session (requests asks for gzip):

- ``metadata``: the series metadata of the CT series;
- ``frames``: frame 1 of every instance of the series, one request each;
- ``qido``: a search for all studies.

The report gives the median and range over the rounds and the ratio Orthanc/PACSmesh
round by round (above 1: PACSmesh is faster). Run from the repository root:

    nice -n 15 .venv/bin/python -m benchmarks.dicomweb --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from dicomweb_client import DICOMwebClient
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from benchmarks.ingest import child_env, find_dcmtk
from node.app import close_archive, open_archive
from tests.orthanc import OrthancProcess
from tests.small_instances import instance, template
from tests.support import NodeProcess

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
CASES = ("metadata", "frames", "qido")
# Named outright: Orthanc's plugin 1.7 answers dicomweb-client's default (type */*) 400.
NATIVE_FRAMES = (("application/octet-stream", ExplicitVRLittleEndian),)


class Orthanc(OrthancProcess):
    def config(self) -> dict[str, Any]:
        return {**super().config(), "Plugins": [PLUGIN],
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}


def ct_series(count: int) -> tuple[list[bytes], str, str]:
    """``count`` instances of one new series made from pydicom's CT_small.dcm."""
    source = dcmread(str(get_testdata_file("CT_small.dcm")))
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for n in range(count):
        source.StudyInstanceUID, source.SeriesInstanceUID = study, series
        source.FrameOfReferenceUID = frame
        source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        source.InstanceNumber = n + 1
        source.ImagePositionPatient = [-158.0, -179.0, -75.0 - 1.25 * n]
        buf = io.BytesIO()
        source.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out, study, series


def one_study_each(count: int) -> list[bytes]:
    """``count`` studies of one small instance each (small_instances' template, whose
    study n is instance 100 n)."""
    base = template()
    return [instance(base, 100 * n) for n in range(count)]


async def fill_node(data_dir: Path, blobs: list[bytes], senders: int = 4) -> float:
    archive, _ = await open_archive(data_dir)
    start = time.perf_counter()
    todo = iter(blobs)

    def sender() -> None:
        for blob in todo:  # one shared iterator: each instance is taken once
            archive.ingest(blob, "BENCH")

    try:
        await asyncio.gather(*(asyncio.to_thread(sender) for _ in range(senders)))
    finally:
        await close_archive(archive)
    return time.perf_counter() - start


def fill_orthanc(orthanc: Orthanc, folders: list[Path]) -> float:
    """storescu, one association per folder, the folders in parallel."""
    storescu = find_dcmtk("storescu")
    start = time.perf_counter()
    procs = [subprocess.Popen([storescu, "-aec", orthanc.aet, "+sd", "127.0.0.1",
                               str(orthanc.dicom_port), str(folder)], env=child_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for folder in folders]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"storescu: exit {proc.returncode}: {err.decode()[-2000:]}")
    return time.perf_counter() - start


def write_folders(root: Path, blobs: list[bytes], parts: int) -> list[Path]:
    folders = [root / f"part{n}" for n in range(parts)]
    for folder in folders:
        folder.mkdir(parents=True)
    for n, blob in enumerate(blobs):
        (folders[n % parts] / f"{n:06d}.dcm").write_bytes(blob)
    return folders


def runner(client: DICOMwebClient, study: str, series: str, sops: list[str],
           studies: int) -> Callable[[str], float]:
    def run(case: str) -> float:
        start = time.perf_counter()
        got: list[Any]
        if case == "metadata":
            got = client.retrieve_series_metadata(study, series)
            want = len(sops)
        elif case == "frames":
            got = [client.retrieve_instance_frames(study, series, sop, [1],
                                                   media_types=NATIVE_FRAMES)[0]
                   for sop in sops]
            want = len(sops)
        else:
            got = client.search_for_studies()
            want = studies
        took = time.perf_counter() - start
        if len(got) != want:
            raise RuntimeError(f"{client.base_url} {case}: {len(got)} answers, not {want}")
        return took
    return run


def report(figures: dict[tuple[str, str], list[float]], cases: list[str], count: int,
           studies: int) -> None:
    def span(values: list[float], unit: float = 1) -> str:
        return (f"{statistics.median(values) * unit:8.3f} "
                f"[{min(values) * unit:.3f}-{max(values) * unit:.3f}]")

    rounds = len(figures[(cases[0], "PACSmesh")])
    print(f"\nseries of {count} CT instances, {studies} studies; {rounds} rounds;"
          " median [range]")
    for case in cases:
        for server in ("PACSmesh", "Orthanc"):
            times = figures[(case, server)]
            rate = f"  {count / statistics.median(times):8.1f} frames/s" \
                if case == "frames" else ""
            print(f"{case:9} {server:9} seconds {span(times):>28}{rate}")
        ratios = [o / p for p, o in zip(figures[(case, "PACSmesh")],
                                        figures[(case, "Orthanc")], strict=True)]
        print(f"{'':9} ratio Orthanc/PACSmesh time: {span(ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500, help="CT instances in the series")
    parser.add_argument("--studies", type=int, default=10_000, help="studies for QIDO")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--hold", action="store_true",
                        help="print the node's pid and wait for Enter before timing"
                        " (to attach py-spy)")
    args = parser.parse_args()
    cases = [c for c in CASES if c in args.cases.split(",")]
    os.umask(0o077)  # the node's data dir is its own (it fixes modes at start-up otherwise)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        ct, study, series = ct_series(args.count)
        sops = [str(dcmread(io.BytesIO(b), stop_before_pixels=True).SOPInstanceUID)
                for b in ct]
        small = one_study_each(args.studies)
        # The CT series is a study of its own: QIDO finds one more than the small ones.
        studies = args.studies + 1
        (work / "node").mkdir()
        took = asyncio.run(fill_node(work / "node", ct + small))
        print(f"PACSmesh fill (ingest, 4 threads): {len(ct) + len(small)} instances in"
              f" {took:.1f} s", flush=True)
        node = NodeProcess(data_dir=work / "node").start(timeout=120)
        stack.callback(node.stop)
        orthanc = Orthanc(work / "orthanc")
        orthanc.start()
        stack.callback(orthanc.stop)
        folders = write_folders(work / "ct", ct, 1) + write_folders(work / "small", small, 4)
        took = fill_orthanc(orthanc, folders)
        print(f"Orthanc fill (storescu, 5 associations in parallel): {len(ct) + len(small)}"
              f" instances in {took:.1f} s", flush=True)
        # dicomweb-client's 20 s read timeout is shorter than a QIDO of 10,000 studies
        # takes on a loaded machine.
        runners = {
            "PACSmesh": runner(DICOMwebClient(f"http://127.0.0.1:{node.http_port}/dicom-web",
                                              timeout=600), study, series, sops, studies),
            "Orthanc": runner(DICOMwebClient(
                f"http://127.0.0.1:{orthanc.http_port}/dicom-web", timeout=600), study,
                series, sops, studies),
        }
        if args.hold:
            print(f"node pid {node.proc.pid if node.proc else '?'}; Enter to go on",
                  flush=True)
            sys.stdin.readline()
        figures: dict[tuple[str, str], list[float]] = {}
        try:
            for case in cases:
                for server, run in runners.items():
                    # Warm-up: page cache, connections, and what each server builds on a
                    # first request (told apart: a viewer's first look is this one).
                    print(f"first {case} from {server}: {run(case):.3f} s", flush=True)
            for round_no in range(args.rounds):
                for case in cases:
                    order = list(runners) if round_no % 2 == 0 else list(reversed(runners))
                    for server in order:
                        figures.setdefault((case, server), []).append(runners[server](case))
        except Exception:
            print(f"PACSmesh's log, the end:\n{node.log()[-4000:]}", file=sys.stderr)
            raise
        report(figures, cases, args.count, studies)


if __name__ == "__main__":
    main()
