"""What one truthful status read costs: ``replication.durability.Durability.owed``.

An index (real SQLite file in a temporary folder) holds ``--instances`` instances in
studies of 100, all received from a modality; ``--queued`` of them are owed to a member
(outbox rows) and ``--pending`` more are stored past the feed checkpoint. Timed, median
of ``--reads`` reads each:

- steady state: the one-statement count (outbox by study and target, changes past the
  checkpoint), what every ``/api/status`` costs once a full check came out clean;
- full check: after a roster change or a restart, every received instance against the
  catalog and the outbox (its rows are then reused for a second).

    python -m benchmarks.durability [--instances 50000] [--queued 5000] [--pending 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from node.dicom_header import InstanceKeys
from node.index import Index
from replication.durability import CHECKPOINT, Durability
from replication.outbox_store import OutboxStore

MEMBERS = ["me", "bb", "cc"]


@dataclass
class _Members:
    node_id: str = "me"
    is_member: bool = True
    ids: list[str] = field(default_factory=lambda: list(MEMBERS))

    def members(self) -> list[str]:
        return self.ids


def _keys(n: int) -> InstanceKeys:
    study = n // 100
    return InstanceKeys(
        sop_instance_uid=f"1.2.9.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid=f"1.2.8.{study}", series_instance_uid=f"1.2.7.{study}",
        transfer_syntax_uid="1.2.840.10008.1.2.1")


async def _median(read: Callable[[], Awaitable[object]], reads: int) -> float:
    times = []
    for _ in range(reads):
        start = time.perf_counter()
        await read()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def run(instances: int, queued: int, pending: int, reads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        index = await Index.open(Path(tmp) / "index.sqlite")
        try:
            for n in range(instances):
                await index.add_instance(_keys(n), f"{n:064x}", 1000, "MODALITY")
            seq = (await index.changes_since(instances - 1, 1))[-1]["seq"]
            rows = [(f"1.2.9.{n}", "bb", f"1.2.8.{n // 100}", f"{n:064x}")
                    for n in range(queued)]
            await OutboxStore(index.db).enqueue(rows, (*CHECKPOINT, seq))
            for n in range(instances, instances + pending):
                await index.add_instance(_keys(n), f"{n:064x}", 1000, "MODALITY")
            steady = Durability(index, _Members(), lambda: 2)
            steady._clean_for = frozenset(MEMBERS)  # as after a clean full check
            t_steady = await _median(steady.owed, reads)
            debt = await steady.owed()

            async def full() -> None:
                await Durability(index, _Members(), lambda: 2).owed()

            t_full = await _median(full, max(3, reads // 10))
        finally:
            await index.close()
    print(f"{instances} instances, {queued} queued rows, {pending} pending: "
          f"under_replicated {len(debt.studies)}, copies {debt.copies}")
    print(f"steady-state read: {t_steady * 1000:.2f} ms (median of {reads})")
    print(f"full check read:   {t_full * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50_000)
    parser.add_argument("--queued", type=int, default=5_000)
    parser.add_argument("--pending", type=int, default=500)
    parser.add_argument("--reads", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.instances, args.queued, args.pending, args.reads))


if __name__ == "__main__":
    main()
