"""Cost of the ingest check (node/dicom_validate.py) per instance, beside the header
parse ingest already does: a generated 512x512 CT and the largest pydicom-data file,
from bytes (C-STORE, HTTP) and from a file (mesh bodies, ingest_file).

    /work/main/.venv/bin/python benchmarks/validate.py [--rounds N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_ct_series
from node.dicom_header import read_keys
from node.dicom_validate import validate


def per_call(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds of one call over ``rounds`` batches."""
    times = []
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while n < 20 or time.perf_counter() - start < 0.2:
            fn()
            n += 1
        times.append((time.perf_counter() - start) / n)
    return sorted(times)[len(times) // 2]


def measure(path: Path, rounds: int) -> None:
    data = path.read_bytes()

    def from_file() -> None:
        with path.open("rb") as fh:
            validate(fh)

    check_bytes = per_call(lambda: validate(data), rounds)
    check_file = per_call(from_file, rounds)
    keys = per_call(lambda: read_keys(data), rounds)
    print(f"{path.name}: {len(data):,} bytes; validate from bytes {check_bytes * 1e6:.0f} us, "
          f"from a file {check_file * 1e6:.0f} us; header parse (read_keys) "
          f"{keys * 1e6:.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import data_store

    largest = max((Path(data_store.__file__).parent / "data").iterdir(),
                  key=lambda p: p.stat().st_size)
    with tempfile.TemporaryDirectory() as tmp:
        pixels = np.random.default_rng(1).integers(0, 4096, (512, 512), dtype=np.uint16)
        [ct] = write_ct_series(Path(tmp), [pixels], patient_name="Bench^CT",
                               patient_id="BENCH", accession="A1")
        measure(ct, args.rounds)
    measure(largest, args.rounds)


if __name__ == "__main__":
    main()
