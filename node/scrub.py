"""Background scrub: re-hash stored objects, a few at a time, and set aside damaged ones.

A file whose bytes no longer match its SHA-256 name (bit rot, a bad sector, a stray
write) is moved to ``quarantine/`` (never deleted) and its index row dropped, so the
instance counts as missing here and the mesh's anti-entropy sends a good copy back.
Sealed objects (encryption at rest) are unsealed and their plaintext hashed: one that
fails authentication takes the same way. With sealing on, a plaintext object stored
before it was turned on is sealed as scrub passes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from node.archive import Archive
from node.data_dir_modes import tighten_file
from node.storage import Storage, TamperedObject
from node.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class Scrubber:
    archive: Archive
    files_per_round: int = 10  # gentle: a full pass over 100k objects takes ~3 h
    interval: float = 1.0
    data_dir_gid: int | None = None  # data_dir_group: object files are 0640 in it
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
            why = await asyncio.to_thread(_damage, self.storage, path, name)
            if why is None:
                await asyncio.to_thread(self._reseal, name)
                await asyncio.to_thread(_owner_only, path, self.data_dir_gid)
                continue
            damaged.append(name)
            await self.archive.set_aside(name, why)
        return damaged

    @property
    def storage(self) -> Storage:
        return self.archive.storage

    def _reseal(self, name: str) -> None:
        try:
            if self.storage.reseal(name):
                log.debug("object %s sealed at rest", name[:12])
        except FileNotFoundError:
            pass  # removed meanwhile: nothing left to seal

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



def _owner_only(path: Path, gid: int | None) -> None:
    # Start-up leaves object files to this pass (see node/data_dir_modes.py).
    try:
        if tighten_file(path, gid):
            log.info("object file %s: mode fixed (open to other users)", path.name[:12])
    except FileNotFoundError:
        pass  # removed or replaced meanwhile


def _damage(storage: Storage, path: Path, name: str) -> str | None:
    """Why the object at ``path`` is damaged, or None when its plaintext hashes to its
    name (or it is gone meanwhile, replaced by a good copy: nothing to set aside)."""
    digest = hashlib.sha256()
    try:
        with storage.open_file(path, name) as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    except TamperedObject as exc:
        return str(exc)
    return None if digest.hexdigest() == name else "no longer matches its hash"
