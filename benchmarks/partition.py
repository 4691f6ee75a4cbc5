"""Partition benchmark: how quick the side that stays together is during a WAN cut.

Five nodes in network namespaces: site A (a1, a2, a3) on one bridge, site B (b1, b2) on
another, the two joined by one link (``tests/netns.py``). After ``--baseline`` stores with
the link up, ``ip link set DEV down`` cuts it (silence, no resets: connections to the far
side hang until their time-outs) and ``--stores`` more follow. Each store is one small CT
instance stored at a1 with DCMTK ``storescu``, of a study with one owner on each side, so
each also queues a copy that hangs on the cut link. Measured from the end of
``storescu``: until C-FIND (``findscu`` inside the namespace) at both a2 and a3 lists the
study ("listed"), and until its site-A owner holds the copy ("delivered"). Then the link
is healed and the run checks that every instance reached both owners, byte-identical.

Target: during the cut, listed p95 <= 2 s, and delivered no slower than with the link up.
The C-FIND polls themselves take ~0.1-0.2 s each (a process per poll), which the figures
include. Needs root (namespaces); everything it creates is removed on exit.

    .venv/bin/python benchmarks/partition.py [--stores 20] [--baseline 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
# Run as a script: the repository root, not benchmarks/, is where the packages are.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != SCRIPT_DIR]
sys.path.insert(0, str(REPO_ROOT))

from tests.netns import netns_available  # noqa: E402
from tests.partition_scenario import run_cut  # noqa: E402


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", type=int, default=20, help="stores during the cut")
    parser.add_argument("--baseline", type=int, default=10, help="stores with the link up")
    parser.add_argument("--bound", type=float, default=120.0,
                        help="give up on one store after this many seconds")
    args = parser.parse_args()
    reason = netns_available()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pacsmesh-partition-") as tmp:
        result = run_cut(Path(tmp), args.stores, args.baseline, args.bound,
                         log=lambda line: print("  " + line, flush=True))
    print(f"\n{'seconds after storescu':<34}{'median':>8}{'p95':>8}{'max':>8}")
    rows = (("listed at a2 and a3, link up", result.before.listed),
            ("listed at a2 and a3, WAN cut", result.during.listed),
            ("at the site-A owner, link up", result.before.delivered),
            ("at the site-A owner, WAN cut", result.during.delivered))
    for name, values in rows:
        print(f"{name:<34}{statistics.median(values):>8.2f}{p95(values):>8.2f}"
              f"{max(values):>8.2f}")
    ratio = statistics.median(result.during.delivered) / statistics.median(
        result.before.delivered)
    print(f"\ndelivery to reachable owners, cut / up (medians): {ratio:.2f}x")
    listed = p95(result.during.listed)
    print(f"listed p95 during the cut: {listed:.2f} s (target <= 2 s): "
          f"{'met' if listed <= 2.0 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
