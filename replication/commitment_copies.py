"""The mesh side of storage commitment (node.commitment.DurableCopies): who else holds
an instance durably.

A member counts when the catalog (its change feed: rows it committed after the file's
fsync) lists the instance with the same SHA-256 as this node's copy, or when it
acknowledged a durable write of that copy lately (the catalog lags behind). The SHA-256
is the object's name everywhere and each receiver checks it on arrival, so the same
hash is the same bytes. Only current members count: a revoked node's copies are not
the mesh's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from replication.catalog_store import CatalogStore
from replication.durability import Membership


class MeshCopies:
    def __init__(self, catalog: CatalogStore, membership: Membership,
                 replicas: Callable[[], int],
                 acknowledged: Callable[[str, str], bool] = lambda sop, target: False) -> None:
        self._catalog = catalog
        self._membership = membership
        self._replicas = replicas
        self._acknowledged = acknowledged

    def required(self) -> int:
        # Outside a mesh this node's copy is all there is (node.commitment.LoneNode);
        # a mesh with fewer than R members cannot commit anything: that is the truth.
        return self._replicas() if self._membership.is_member else 1

    async def other_holders(self, wanted: Mapping[str, str | None]) -> dict[str, frozenset[str]]:
        me = self._membership.node_id
        others = set(self._membership.members()) - {me}
        if not others:
            return {}
        listed = await self._catalog.holders_of(list(wanted))
        held: dict[str, frozenset[str]] = {}
        for sop, sha in wanted.items():
            rows = [(node, h) for node, h in listed.get(sop, []) if node in others]
            if sha is None:
                # Not held here: the members that agree on the commonest copy.
                common = Counter(h for _, h in rows).most_common(1)
                held[sop] = frozenset(n for n, h in rows if common and h == common[0][0])
            else:
                held[sop] = frozenset(
                    {n for n, h in rows if h == sha}
                    | {n for n in others if self._acknowledged(sop, n)})
        return held
