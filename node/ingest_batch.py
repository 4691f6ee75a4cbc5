"""Group commit of index rows: what several associations store at once shares one write.

Each ingest hands its row to the loop and waits for its commit (node/archive.py). One at
a time, every row paid a commit and the hops between its handler thread, the loop and
the database's thread; with four senders the handler threads spent two thirds of their
time waiting on those hops (py-spy), and four senders were slower than one. Here the
rows that arrive while a write runs go together in the next one (Index.add_instances):
one transaction, one statement when all are new. A row's outcome is known, and told,
only once its transaction has committed; an error fails every row of that write, none
of which is then answered as stored.
"""

from __future__ import annotations

import asyncio

from node.dicom_header import InstanceKeys
from node.index import AddOutcome, Index, IndexFailure

Row = tuple[InstanceKeys, str, int, str]  # keys, sha256, size, source AE
# Rows per write at most: a long batch delays the first row's answer for the last's.
MAX_BATCH = 64


class AddBatcher:
    def __init__(self, index: Index) -> None:
        """Create on the loop that owns ``index``; call :meth:`add` on it."""
        self.index = index
        self._waiting: list[tuple[Row, asyncio.Future[tuple[AddOutcome, str]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, keys: InstanceKeys, sha256: str, size: int,
                  source_aet: str = "") -> tuple[AddOutcome, str]:
        """Index.add_instance, committed with whatever else arrives meanwhile."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(((keys, sha256, size, source_aet), done))
        if self._writer is None or self._writer.done():
            # A task of its own: a cancelled caller must not leave the others' rows
            # half-handled.
            self._writer = asyncio.create_task(self._write(), name="index-batch")
        return await asyncio.shield(done)

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                outcomes = await self.index.add_instances([row for row, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            except BaseException:  # cancelled (the loop is closing): nothing was recorded
                for _, done in batch + self._waiting:
                    done.cancel()
                self._waiting = []
                raise
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if done.done():
                    continue
                if isinstance(outcome, IndexFailure):
                    done.set_exception(outcome)
                else:
                    done.set_result(outcome)
