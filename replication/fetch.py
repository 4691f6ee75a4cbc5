"""Instances this node lacks, fetched from the healthiest live holder and kept in the cache.

A retrieve (C-GET, C-MOVE) of a study held elsewhere asks :class:`Fetcher` for each
instance it does not hold; a few are fetched ahead of the one being sent, so the
requester gets images as they arrive rather than after the whole study. Each instance
comes whole from one holder (``GET /mesh/objects/<sha256>``), checked against its hash;
when a holder fails, the same instance is asked of the next one, and what was already
delivered is never fetched again. Fetched copies are stored like mesh copies (source
``mesh:cache``), so replication does not forward them, and fall under the cache budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

from discovery.probe import ProbeFailed
from discovery.service import Discovery
from node.archive import Archive, IngestStatus
from node.body_file import BatchedFeed
from node.cache import evictions
from node.dicom_header import InvalidDataset
from node.index import IndexFailure, StoredInstance
from node.storage import StorageError
from replication.breaker import CircuitBreaker
from replication.cache_store import CacheStore
from replication.catalog_store import CatalogStore
from replication.errors import RemoteReplicationError
from replication.incoming import Incoming, IncomingError
from replication.outgoing import SLOWEST_RATE
from replication.placement import owners
from replication.transfer import OBJECTS_PATH

log = logging.getLogger(__name__)
CACHE_SOURCE = "mesh:cache"  # "mesh:" keeps it out of the outbox (see replication.service)
LOOKAHEAD = 4  # instances fetched ahead of the one being sent
FETCH_SECONDS = 120.0


class FetchFailed(RemoteReplicationError, RuntimeError):
    """No live holder could deliver the instance."""


def rank_holders(
    holders: Iterable[str], alive: Callable[[str], bool], allowed: Callable[[str], bool],
    failures: Mapping[str, int],
) -> list[str]:
    """Holders to ask, best first: alive per discovery, breaker closed (or half-open),
    fewest failures; ties by node id so every retrieve orders them alike."""
    usable = [h for h in set(holders) if alive(h) and allowed(h)]
    return sorted(usable, key=lambda h: (failures.get(h, 0), h))


@dataclass
class FetchStats:
    """For operators and for tests: what retrieves took from the mesh."""

    fetched: int = 0  # instances fetched from members
    bytes: int = 0
    failovers: int = 0  # fetches that failed at one holder (and went to the next)
    failed: int = 0  # instances no holder could deliver
    from_cache: int = 0  # instances a retrieve found already cached here
    evicted: int = 0
    by_holder: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return asdict(self)


class Fetcher:
    def __init__(
        self, archive: Archive, discovery: Discovery, cache_bytes: int,
        replicas: Callable[[], int], clock: Callable[[], float] = time.time,
    ) -> None:
        self.archive = archive
        self.discovery = discovery
        self.cache_bytes = cache_bytes
        self._replicas = replicas
        self._clock = clock
        self._cache = CacheStore(archive.index.db)
        self._catalog = CatalogStore(archive.index.db)
        self._breakers: defaultdict[str, CircuitBreaker] = defaultdict(
            lambda: CircuitBreaker(self._clock))
        self._failures: dict[str, int] = {}
        self.stats = FetchStats()

    def _breaker(self, node_id: str) -> CircuitBreaker:
        return self._breakers[node_id]

    def ranked(self, holders: Iterable[str]) -> list[str]:
        """Other members among ``holders`` worth asking, best first."""
        me = self.discovery.node_id
        return rank_holders([h for h in holders if h != me], self.discovery.is_alive,
                            lambda n: self._breaker(n).allow(), self._failures)

    async def fetch(self, inst: StoredInstance) -> None:
        """Bring ``inst`` here from a holder, or raise FetchFailed."""
        held = (await self._catalog.holders_of([inst.sop_uid])).get(inst.sop_uid, [])
        ranked = self.ranked(node for node, sha in held if sha == inst.sha256)
        last: Exception | None = None
        for node in ranked:
            try:
                await self._fetch_from(node, inst)
            except (ProbeFailed, IncomingError, OSError) as exc:
                self._breaker(node).failed()
                self._failures[node] = self._failures.get(node, 0) + 1
                self.stats.failovers += 1
                last = exc
                log.info("fetch of %s from %s failed, next holder: %s",
                         inst.sha256[:12], node[:15], exc)
                continue
            self._breaker(node).succeeded()
            self.stats.fetched += 1
            self.stats.bytes += inst.size
            self.stats.by_holder[node] = self.stats.by_holder.get(node, 0) + 1
            return
        self.stats.failed += 1
        reason = f": {last}" if last else " (none alive)"
        raise FetchFailed(f"no holder delivered {inst.sha256[:12]}{reason}")

    async def _fetch_from(self, node: str, inst: StoredInstance) -> None:
        storage = self.archive.storage
        incoming = await asyncio.to_thread(Incoming, storage, inst.sha256, 0, None, None)

        sink = BatchedFeed(incoming)
        try:
            await self.discovery.stream_from_member(
                node, OBJECTS_PATH.format(sha256=inst.sha256), sink,
                FETCH_SECONDS + inst.size / SLOWEST_RATE,
            )
            await sink.flush()
            path = await asyncio.to_thread(incoming.finish)
        except BaseException:
            await asyncio.to_thread(incoming.abandon)
            raise
        try:
            result = await asyncio.to_thread(
                self.archive.ingest_file, path, inst.sha256, CACHE_SOURCE)
        except (InvalidDataset, IndexFailure) as exc:
            raise IncomingError(f"fetched object not storable: {exc}") from exc
        if result.status not in (IngestStatus.STORED, IngestStatus.DUPLICATE):
            raise IncomingError(f"fetched object not kept here: {result.status.value}")
        await self._cache.cache_add(inst, self._clock())

    async def used_locally(self, sop_uids: list[str]) -> None:
        """A retrieve sent these from local files: cached ones are recently used."""
        if sop_uids:
            hits = await self._cache.cache_touch(sop_uids, self._clock())
            self.stats.from_cache += hits
            log.debug("%d of %d instances served from the cache", hits, len(sop_uids))

    async def enforce_budget(self, keep: Iterable[str] = ()) -> None:
        """Evict least recently used cached instances until the cache fits its budget;
        never one of a study this node owns, nor one in ``keep`` (being sent, read only
        when something must go)."""
        index = self.archive.index
        if await self._cache.cache_bytes() <= self.cache_bytes:
            return
        entries = await self._cache.cache_entries()
        members, me, replicas = self.discovery.members(), self.discovery.node_id, self._replicas()

        def pinned(study_uid: str) -> bool:
            return me in owners(study_uid, members, replicas) if members else True

        doomed = evictions(entries, self.cache_bytes, pinned, frozenset(keep))
        if not doomed:
            return
        storage = self.archive.storage
        gone = await self._cache.evict(doomed, self._clock())
        # A crash between the commit above and this record leaves at most these cached
        # copies' files, never an answer (no row): `pacsmesh fsck` reclaims the space.
        record = await asyncio.to_thread(storage.intend_removal, "removed", gone)
        await index.sync_durably()  # the rows' removal first, then the files
        for sha in gone:
            if not await index.sops_with_sha(sha):
                try:
                    await asyncio.to_thread(storage.remove, sha)
                except StorageError as exc:
                    # The row is gone; the record has start-up remove the orphan.
                    log.warning("cache eviction left %s on disk: %s", sha[:12], exc)
                    record = None
        storage.removal_done(record)
        self.stats.evicted += len(doomed)
        log.info("cache over budget: %d instance(s) evicted", len(doomed))


class Prefetch:
    """The remote instances of one retrieve, fetched in order, a few ahead of the sender.

    Create on the loop; the sender (a pynetdicom thread) waits on :meth:`take` through
    ``Archive.on_loop``, in the order of ``instances``."""

    def __init__(self, fetcher: Fetcher, instances: list[StoredInstance]) -> None:
        loop = asyncio.get_running_loop()
        self._fetcher = fetcher
        self._remote = [i for i in instances if not i.local]
        self._results: dict[str, asyncio.Future[None]] = {
            i.sop_uid: loop.create_future() for i in self._remote
        }
        self._slots = asyncio.Semaphore(LOOKAHEAD)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner = asyncio.create_task(self._run())

    async def _run(self) -> None:
        for inst in self._remote:
            await self._slots.acquire()  # given back when the sender takes a result
            task = asyncio.create_task(self._one(inst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(self, inst: StoredInstance) -> None:
        result = self._results[inst.sop_uid]
        try:
            await self._fetcher.fetch(inst)
        except Exception as exc:  # handed to the sender, who reports a failed sub-operation
            if not result.done():
                result.set_exception(exc)
        else:
            if not result.done():
                result.set_result(None)

    async def take(self, sop_uid: str) -> None:
        """Wait until ``sop_uid`` is here; raises what fetching it raised."""
        try:
            await self._results[sop_uid]
        finally:
            self._slots.release()

    async def close(self) -> None:
        self._runner.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(self._runner, *self._tasks, return_exceptions=True)
        for result in self._results.values():
            if result.done() and not result.cancelled():
                result.exception()  # retrieved: a cancelled retrieve's failures are moot
