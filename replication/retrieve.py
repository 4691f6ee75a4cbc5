"""What the DICOM services ask of the mesh: image-level keys and instances held elsewhere.

One object handed to ``node.dicom.scp.DicomServer`` by the composition root, so the
DICOM side depends on this small surface and not on replication's modules.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset

from discovery.service import Discovery
from node.index import StoredInstance
from node.query import Query
from replication.fetch import Fetcher, Prefetch
from replication.remote_find import image_rows


class MeshRetrieve:
    def __init__(self, discovery: Discovery, fetcher: Fetcher) -> None:
        self.discovery = discovery
        self.fetcher = fetcher

    async def image_rows(
        self, query: Query, identifier: Dataset, root: str
    ) -> list[dict[str, Any]]:
        index = self.fetcher.archive.index
        return await image_rows(index, self.discovery, self.fetcher.ranked, query,
                                identifier, root)

    async def start(self, instances: list[StoredInstance]) -> Prefetch:
        return Prefetch(self.fetcher, instances)

    async def used_locally(self, sop_uids: list[str]) -> None:
        await self.fetcher.used_locally(sop_uids)

    async def enforce_budget(self, keep: Iterable[str] = ()) -> None:
        await self.fetcher.enforce_budget(keep)
