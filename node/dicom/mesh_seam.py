"""What the DICOM side asks of the mesh, answerable before the mesh is up.

The DICOM port opens first (node/app.py): the HTTP and mesh stacks take longer to import
and start than a modality waits for its first C-ECHO. Stores need nothing of the mesh
(the change feed records each one, and the replicator, once started, owes copies from
it). Until :meth:`MeshSeam.attach`, what does need the mesh errs on the narrow side:
no AE title is known as a member's or a discovered device's (an access decision made
then grants nothing a member's title would); a retrieve, a C-MOVE destination only the
mesh can name, and a storage commitment (whose copies elsewhere only the mesh can count:
never "committed" on this node's copy alone) wait for it, bounded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydicom.dataset import Dataset

from node.commitment import DurableCopies
from node.dicom.claims import MemberIdentity, Members
from node.dicom.retrieve_scp import Fetching, MeshSource
from node.index import StoredInstance
from node.query import Query

Resolver = Callable[[str], "tuple[str, int] | None"]
# Long enough for any start-up (imports, TLS contexts, the first peer table load), short
# enough that a node whose mesh failed to start answers its pending requests.
MESH_WAIT = 60.0


class MeshNotReady(RuntimeError):
    """The mesh half of the node did not come up in time for a request that needs it."""


class MeshSeam(MeshSource, DurableCopies):
    def __init__(self) -> None:
        """Create on the event loop that will call :meth:`attach`."""
        self._up = threading.Event()  # for pynetdicom's threads
        self._up_async = asyncio.Event()  # for coroutines on the loop
        self._resolve: Resolver = lambda aet: None
        self._mesh: MeshSource | None = None
        self._aets: Callable[[], Iterable[str]] = lambda: ()
        self._members: Members = lambda: ()
        self._copies: DurableCopies | None = None

    def attach(self, resolve: Resolver, mesh: MeshSource,
               aets: Callable[[], Iterable[str]], members: Members,
               copies: DurableCopies) -> None:
        """The mesh is up: from now on every question goes to it. Call on the loop."""
        self._resolve, self._mesh, self._aets, self._members = resolve, mesh, aets, members
        self._copies = copies
        self._up.set()
        self._up_async.set()

    def resolve(self, aet: str) -> tuple[str, int] | None:
        """A C-MOVE destination the configured table does not name."""
        if not self._up.wait(MESH_WAIT):
            raise MeshNotReady("the mesh is not up yet: AE titles it knows cannot be resolved")
        return self._resolve(aet)

    def aets(self) -> Iterable[str]:
        return self._aets()

    def members(self) -> list[MemberIdentity]:
        return list(self._members())

    async def _ready(self) -> MeshSource:
        try:
            await asyncio.wait_for(self._up_async.wait(), MESH_WAIT)
        except TimeoutError:
            raise MeshNotReady("the mesh is not up yet") from None
        assert self._mesh is not None
        return self._mesh

    # --- DurableCopies: what storage commitment asks (other_holders first, then required)

    def required(self) -> int:
        if self._copies is None:
            raise MeshNotReady("the mesh is not up yet: copies cannot be counted")
        return self._copies.required()

    async def other_holders(self, wanted: Mapping[str, str | None]) -> dict[str, frozenset[str]]:
        await self._ready()
        assert self._copies is not None
        return await self._copies.other_holders(wanted)

    async def image_rows(
        self, query: Query, identifier: Dataset, root: str
    ) -> list[dict[str, Any]]:
        return await (await self._ready()).image_rows(query, identifier, root)

    async def start(self, instances: list[StoredInstance]) -> Fetching:
        return await (await self._ready()).start(instances)

    async def used_locally(self, sop_uids: list[str]) -> None:
        await (await self._ready()).used_locally(sop_uids)

    async def enforce_budget(self, keep: Iterable[str] = ()) -> None:
        await (await self._ready()).enforce_budget(keep)
