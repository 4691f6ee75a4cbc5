"""Start-up cost of making an open data dir owner-only (node/data_dir_modes.py).

Builds a data dir laid out like a node's (256 object shards holding ``--objects`` small
files, an index file, identity), everything 0755/0644 as an older version under umask
022 left it, then times :func:`secure_data_dir` (what a start does before the DICOM
port opens: the top level, the index, every folder, no object file) against a walk that
also chmods every object file (what start-up deliberately leaves to the scrub).

Run from the repository root:

    .venv/bin/python benchmarks/data_dir_modes.py --objects 200000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.data_dir_modes import secure_data_dir, tighten_file


def build(root: Path, objects: int) -> None:
    (root / "identity").mkdir(parents=True)
    (root / "identity" / "node.key").write_bytes(b"k")
    (root / "index.sqlite").write_bytes(b"i")
    for i in range(256):
        (root / "objects" / f"{i:02x}").mkdir(parents=True)
    for n in range(objects):
        (root / "objects" / f"{n % 256:02x}" / f"{n:064x}.dcm").write_bytes(b"")


def loosen(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(Path(dirpath) / name, 0o644)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        build(root, args.objects)
        loosen(root)
        start = time.perf_counter()
        fixed = secure_data_dir(root)
        at_start = time.perf_counter() - start
        loosen(root)
        start = time.perf_counter()
        secure_data_dir(root)
        count = sum(tighten_file(p) for p in (root / "objects").glob("*/*.dcm"))
        everything = time.perf_counter() - start
    print(f"{args.objects} objects: start-up fix {at_start * 1000:.0f} ms "
          f"({len(fixed)} paths); every object file too {everything * 1000:.0f} ms "
          f"({count} object files)")


if __name__ == "__main__":
    main()
