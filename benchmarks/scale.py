"""C-FIND at scale: a million instances in 100,000 studies, standalone and over a mesh.

The archive is filled through the real ingest path (``Archive.ingest``: validation,
write, fdatasync, rename, directory fsync, the one index statement), with small
instances (a 2x2 CT image each), from several threads as several associations would;
the fill's duration and rate are recorded, first and last tenth apart (the ingest rate
at N indexed instances against an empty index). The catalog of "10 other members" is
then filled through the replication path that learns it (``CatalogStore
.record_catalog_changes``, pages of change-feed entries): every local instance is also
held by one of them (R = 2), and one study in ten is held only by two of them.

Queries are timed as a node answers them: the identifier parsed, the SQL run on the
index's loop, every response identifier built and encoded as it goes on the wire.

    .venv/bin/python -m benchmarks.scale --studies 100000 --per-study 10
    .venv/bin/python -m benchmarks.scale --data-dir /tmp/scale   # reuse a filled one

Names come from a fixed list of surnames (``SMITH`` about 1 %); study dates spread
over ten years, so a 36-day range returns about 1,000 studies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom.dsutils import encode

from node.app import open_archive
from node.archive import Archive
from node.query import parse_identifier, response_identifier
from replication.catalog_store import CatalogStore
from tests.support import NodeProcess

SURNAMES = ["SMITH", "JONES", "MÜLLER", "GARCIA", "SILVA", "JOÃO", "NGUYEN", "KIM",
            "BROWN", "TAYLOR"] + [f"NAME{n:03d}" for n in range(90)]
FIRST = ["ANN", "BOB", "ZOË", "JOSÉ", "LI", "OLA", "MARIA", "PAUL", "EVA", "IAN"]
START = date(2016, 1, 1)
ROOT = "1.2.826.0.1.3680043.10.1094"  # a benchmark-only UID root


def study_keys(n: int, studies: int) -> dict[str, str]:
    rnd = random.Random(n)
    # Zipf-like: the first surnames are the common ones (SMITH ~1 % of patients).
    surname = SURNAMES[min(int(rnd.paretovariate(1.2)) - 1, len(SURNAMES) - 1)] \
        if rnd.random() < 0.1 else rnd.choice(SURNAMES[10:])
    patient = n // 2  # two studies per patient
    return {
        "study_uid": f"{ROOT}.1.{n}",
        "patient_id": f"P{patient:07d}",
        "patient_name": f"{surname}^{FIRST[patient % len(FIRST)]}",
        "accession_number": f"A{n:08d}",
        "study_date": (START + timedelta(days=n % studies * 3650 // studies)).strftime("%Y%m%d"),
    }


def instance_bytes(study: int, studies: int, number: int, template: Dataset) -> bytes:
    keys = study_keys(study, studies)
    ds = template
    ds.StudyInstanceUID = keys["study_uid"]
    ds.SeriesInstanceUID = f"{ROOT}.2.{study}"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = \
        f"{ROOT}.3.{study}.{number}"
    ds.PatientID = keys["patient_id"]
    ds.PatientName = keys["patient_name"]
    ds.AccessionNumber = keys["accession_number"]
    ds.StudyDate = ds.SeriesDate = keys["study_date"]
    ds.InstanceNumber = number + 1
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def template() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality = "CT"
    ds.StudyTime = "101500"
    ds.SeriesNumber = 1
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\0" * 8
    return ds


def fill(archive: Archive, studies: int, per_study: int, threads: int) -> dict[str, Any]:
    """Ingest every instance through Archive.ingest; rates of the first and last tenth."""
    total = studies * per_study
    done = 0
    lock = threading.Lock()
    marks: list[tuple[int, float]] = []
    started = time.perf_counter()

    def worker(first: int) -> None:
        nonlocal done
        tpl = template()
        for study in range(first, studies, threads):
            for number in range(per_study):
                archive.ingest(instance_bytes(study, studies, number, tpl), "SCALE")
            with lock:
                done += per_study
                marks.append((done, time.perf_counter() - started))
                if done % max(total // 20, 1) < per_study:
                    print(f"  {done:,} / {total:,} instances, {marks[-1][1]:.0f} s",
                          flush=True)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    elapsed = time.perf_counter() - started
    tenth = total // 10

    def rate(lo: int, hi: int) -> float:
        t0 = next((t for n, t in marks if n >= lo), 0.0) if lo else 0.0
        n1, t1 = next((n, t) for n, t in marks if n >= hi)
        n0 = next((n for n, t in marks if n >= lo), 0) if lo else 0
        return (n1 - n0) / (t1 - t0)

    return {"instances": total, "seconds": round(elapsed, 1),
            "rate_first_tenth": round(rate(0, tenth), 1),
            "rate_last_tenth": round(rate(total - tenth, total), 1)}


async def fill_catalog(catalog: CatalogStore, studies: int, per_study: int,
                       members: int) -> float:
    """Every local instance also on one of ``members``; one study in ten beyond the
    local ones on two of them. Pages of 1,000 changes, as the feed is read."""
    started = time.perf_counter()
    pages: dict[str, list[dict[str, Any]]] = {}
    seq: dict[str, int] = {}

    async def flush(node: str) -> None:
        seq[node] = seq.get(node, 0) + len(pages[node])
        await catalog.record_catalog_changes(node, pages.pop(node), seq[node])

    extra = studies // 10
    for study in range(studies + extra):
        keys = study_keys(study, studies)
        holders = [f"member-{study % members}"]
        if study >= studies:
            holders.append(f"member-{(study + 1) % members}")
        for node in holders:
            page = pages.setdefault(node, [])
            for number in range(per_study):
                page.append({
                    "kind": "add", "sop_uid": f"{ROOT}.3.{study}.{number}",
                    "sha256": f"{study:032x}{number:032x}", "series_uid": f"{ROOT}.2.{study}",
                    "sop_class_uid": CTImageStorage,
                    "transfer_syntax_uid": ExplicitVRLittleEndian,
                    "instance_number": str(number + 1), "rows": 2, "columns": 2,
                    "size": 400, "modality": "CT", "series_number": "1",
                    "series_date": keys["study_date"], "study_time": "101500", **keys,
                })
            if len(page) >= 1000:
                await flush(node)
    for node in list(pages):
        await flush(node)
    return time.perf_counter() - started


def queries(studies: int) -> dict[str, dict[str, str]]:
    """The timed queries, with keys that exist whatever the archive's size."""
    middle = study_keys(studies // 2, studies)
    first = study_keys(studies // 2 - 500, studies)
    last = study_keys(studies // 2 + 499, studies)
    return {
        "exact PatientID": {"PatientID": middle["patient_id"]},
        "exact AccessionNumber": {"AccessionNumber": middle["accession_number"]},
        "SMITH*": {"PatientName": "SMITH*"},
        "müller* (folded)": {"PatientName": "müller*"},
        "exact name": {"PatientName": middle["patient_name"]},
        "1,000 studies (date range)": {
            "StudyDate": f"{first['study_date']}-{last['study_date']}"},
    }


RETURN_KEYS = ("PatientName", "PatientID", "StudyDate", "AccessionNumber",
               "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")


def identifier(match: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    for key in RETURN_KEYS:
        setattr(ds, key, "")
    for key, value in match.items():
        setattr(ds, key, value)
    return ds


async def time_queries(archive: Archive, studies: int, mesh: bool,
                       rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, match in queries(studies).items():
        times, answers = [], 0
        for _ in range(rounds):
            started = time.perf_counter()
            query = parse_identifier(identifier(match))
            rows = await archive.index.find(query, mesh=mesh)
            for row in rows:
                encode(response_identifier(query, row, "SCALE"), True, True)
            times.append((time.perf_counter() - started) * 1000)
            answers = len(rows)
        results[name] = {"answers": answers, "p50_ms": round(statistics.median(times), 1),
                         "min_ms": round(min(times), 1), "max_ms": round(max(times), 1)}
        print(f"  {'mesh' if mesh else 'local':5} {name:28} {answers:6} answers"
              f"  p50 {results[name]['p50_ms']:8.1f} ms"
              f"  ({results[name]['min_ms']}-{results[name]['max_ms']})", flush=True)
    return results


def timed_ingest(node: NodeProcess, folder: Path) -> float:
    """Instances per second of one storescu association sending ``folder``."""
    count = sum(1 for _ in folder.iterdir())
    t0 = time.perf_counter()
    subprocess.run(["storescu", "-aec", node.aet, "+sd", *node.address, str(folder)],
                   check=True, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})
    return count / (time.perf_counter() - t0)


def ingest_batches(root: Path, studies: int, batches: int, per_batch: int) -> list[Path]:
    """Folders of new small instances (studies beyond the filled ones), one per batch."""
    folders = []
    tpl = template()
    for batch in range(batches):
        folder = root / f"batch{batch}"
        folder.mkdir(parents=True)
        for n in range(per_batch):
            study = 10 * studies + batch * per_batch + n
            (folder / f"{n}.dcm").write_bytes(instance_bytes(study, studies, 0, tpl))
        folders.append(folder)
    return folders


def compare_ingest(data_dir: Path, studies: int, batches: int = 3,
                   per_batch: int = 300) -> dict[str, Any]:
    """The ingest rate into the filled node against a node on an empty index, batches
    alternating between the two, the same kind of instances."""
    work = Path(tempfile.mkdtemp(prefix="pacsmesh-scale-ingest-"))
    full_batches = ingest_batches(work / "full", studies, batches, per_batch)
    empty_batches = ingest_batches(work / "empty", studies, batches, per_batch)
    (work / "empty-data").mkdir()
    full, empty = NodeProcess(data_dir), NodeProcess(work / "empty-data")
    rates: dict[str, list[float]] = {"filled": [], "empty": []}
    full.start(timeout=1800)
    empty.start(timeout=120)
    try:
        for batch in range(batches):
            rates["filled"].append(timed_ingest(full, full_batches[batch]))
            rates["empty"].append(timed_ingest(empty, empty_batches[batch]))
    finally:
        full.stop()
        empty.stop()
    result = {name: [round(r, 1) for r in values] for name, values in rates.items()}
    ratio = statistics.median(rates["filled"]) / statistics.median(rates["empty"])
    result["filled/empty"] = round(ratio, 3)
    print(f"  ingest, instances/s: filled {result['filled']}, empty {result['empty']};"
          f" filled/empty {ratio:.2f} (target >= 0.90)", flush=True)
    return result


def time_findscu(data_dir: Path, studies: int, rounds: int) -> dict[str, Any]:
    """The same queries from DCMTK findscu (a process per query, as a RIS or a script
    runs it) to a real node started on the filled data dir, after its start-up."""
    node = NodeProcess(data_dir)
    started = time.perf_counter()
    node.start(timeout=1800)
    results: dict[str, Any] = {"start_seconds": round(time.perf_counter() - started, 2)}
    print(f"  node started on the filled dir in {results['start_seconds']} s", flush=True)
    try:
        # The floor under every findscu time: a process, an association, one exchange.
        floor = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            subprocess.run(["echoscu", "-aec", node.aet, *node.address], check=True,
                           capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})
            floor.append((time.perf_counter() - t0) * 1000)
        results["echoscu_floor_p50_ms"] = round(statistics.median(floor), 1)
        print(f"  echoscu (the floor: process + association) p50"
              f" {results['echoscu_floor_p50_ms']} ms", flush=True)
        for name, match in queries(studies).items():
            keys = [f"{k}={v}" for k, v in match.items()]
            keys += [f"{k}" for k in RETURN_KEYS if k not in match]
            command = ["findscu", "-S", "-aec", node.aet, "-k", "QueryRetrieveLevel=STUDY",
                       "-k", "StudyInstanceUID", "-k", "SpecificCharacterSet=ISO_IR 192",
                       *[a for k in keys for a in ("-k", k)], *node.address]
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True,
                               env={**os.environ, "TCP_NODELAY": "1"})
                times.append((time.perf_counter() - t0) * 1000)
            results[name] = {"p50_ms": round(statistics.median(times), 1),
                             "min_ms": round(min(times), 1), "max_ms": round(max(times), 1)}
            print(f"  findscu {name:28} p50 {results[name]['p50_ms']:8.1f} ms"
                  f"  ({results[name]['min_ms']}-{results[name]['max_ms']})", flush=True)
    finally:
        node.stop()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--per-study", type=int, default=10)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--data-dir", type=Path, help="reuse (or fill, if empty) this dir")
    parser.add_argument("--in-process-only", action="store_true",
                        help="skip the findscu queries to a node started on the dir")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="pacsmesh-scale-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"data_dir": str(data_dir)}
    archive, _ = await open_archive(data_dir)
    try:
        counts = await archive.index.counts()
        if counts.instances == 0:
            print(f"filling {data_dir}: {args.studies:,} studies x {args.per_study}")
            report["fill"] = await asyncio.to_thread(
                fill, archive, args.studies, args.per_study, args.threads)
            print(f"  fill: {report['fill']}")
            catalog = CatalogStore(archive.index.db)
            seconds = await fill_catalog(catalog, args.studies, args.per_study,
                                         args.members)
            report["catalog_fill_seconds"] = round(seconds, 1)
            (data_dir / "scale-fill.json").write_text(json.dumps(report))
        else:
            report.update(json.loads((data_dir / "scale-fill.json").read_text()))
        report["standalone"] = await time_queries(archive, args.studies, mesh=False,
                                                  rounds=args.rounds)
        report["mesh"] = await time_queries(archive, args.studies, mesh=True,
                                            rounds=args.rounds)
    finally:
        await archive.index.close()
    if not args.in_process_only:
        report["findscu"] = await asyncio.to_thread(time_findscu, data_dir, args.studies,
                                                    args.rounds)
        report["ingest"] = await asyncio.to_thread(compare_ingest, data_dir, args.studies)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
