"""Background scrub: re-hash stored objects, a few at a time, and set aside damaged ones.

A file whose bytes no longer match its SHA-256 name (bit rot, a bad sector, a stray
write) is moved to ``quarantine/`` (never deleted) and its index row dropped, so the
instance counts as missing here and the mesh's anti-entropy sends a good copy back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from node.index import Index
from node.storage import Storage
from node.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class Scrubber:
    storage: Storage
    index: Index
    files_per_round: int = 10  # gentle: a full pass over 100k objects takes ~3 h
    interval: float = 1.0
    _shard: int = 0
    _after: str = ""
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scrub")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.scrub_round()
            except OSError as exc:  # an unreadable disk is reported, and tried again later
                log.error("scrub could not read the archive: %s", exc)
            await asyncio.sleep(self.interval)

    async def scrub_round(self) -> list[str]:
        """Check the next few objects; return the SHA-256 names found damaged."""
        damaged = []
        for name, path in await asyncio.to_thread(self._next_batch):
            if not await asyncio.to_thread(_matches, path, name):
                damaged.append(name)
                await self._set_aside(name, path)
        return damaged

    def _next_batch(self) -> list[tuple[str, Path]]:
        batch: list[tuple[str, Path]] = []
        for _ in range(256):  # at most one full turn over the shards per round
            shard = self.storage.objects / f"{self._shard:02x}"
            names = sorted(
                e.name[:-4] for e in os.scandir(shard) if e.name.endswith(".dcm")
            ) if shard.is_dir() else []
            later = [n for n in names if n > self._after]
            take = later[: self.files_per_round - len(batch)]
            batch += [(n, shard / f"{n}.dcm") for n in take]
            if len(take) < len(later):
                self._after = take[-1]
                break
            self._shard, self._after = (self._shard + 1) % 256, ""
            if len(batch) >= self.files_per_round:
                break
        return batch

    async def _set_aside(self, name: str, path: Path) -> None:
        holders = await self.index.sops_with_sha(name)
        try:
            await asyncio.to_thread(self.storage.move_to_quarantine, path)
        except FileNotFoundError:
            return  # replaced or removed meanwhile
        if holders:
            await self.index.remove_instances(holders)
        log.error(
            "object %s no longer matches its hash: moved to quarantine; %d instance(s) will be"
            " fetched again from the mesh", name[:12], len(holders),
        )


def _matches(path: Path, name: str) -> bool:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        return True  # gone meanwhile (replaced by a good copy): nothing to set aside
    return digest.hexdigest() == name
