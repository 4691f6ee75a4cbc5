"""replication.commitment_copies: who else holds an instance, read from a real catalog."""

from __future__ import annotations

from dataclasses import dataclass, field

from node.index import Index
from replication.catalog_store import CatalogStore
from replication.commitment_copies import MeshCopies

ME, B, C, GONE = "me", "b", "c", "revoked"
SHA, OTHER = "a" * 64, "b" * 64


@dataclass
class _Members:
    node_id: str = ME
    is_member: bool = True
    ids: list[str] = field(default_factory=lambda: [ME, B, C])

    def members(self) -> list[str]:
        return self.ids


async def _holds(index: Index, node: str, sop: str, sha: str) -> None:
    await CatalogStore(index.db).record_catalog_changes(node, [
        {"kind": "add", "sop_uid": sop, "study_uid": "1.2.3", "sha256": sha}], 1)


async def test_only_members_with_the_same_bytes_count(index: Index) -> None:
    acked: set[tuple[str, str]] = set()
    copies = MeshCopies(CatalogStore(index.db), _Members(), lambda: 2,
                        lambda sop, target: (sop, target) in acked)
    assert copies.required() == 2
    assert await copies.other_holders({"1.1": SHA}) == {"1.1": frozenset()}
    await _holds(index, B, "1.1", SHA)
    await _holds(index, C, "1.1", OTHER)  # other bytes under the same UID: no copy of ours
    await _holds(index, GONE, "1.1", SHA)  # not a member (any more)
    assert await copies.other_holders({"1.1": SHA}) == {"1.1": frozenset({B})}
    acked.add(("1.1", C))  # acknowledged before the catalog heard of it
    assert await copies.other_holders({"1.1": SHA}) == {"1.1": frozenset({B, C})}


async def test_not_held_here_counts_the_members_that_agree(index: Index) -> None:
    copies = MeshCopies(CatalogStore(index.db), _Members(ids=[ME, B, C, "d"]), lambda: 2)
    await _holds(index, B, "2.2", SHA)
    await _holds(index, C, "2.2", SHA)
    await _holds(index, "d", "2.2", OTHER)
    assert await copies.other_holders({"2.2": None}) == {"2.2": frozenset({B, C})}


async def test_outside_a_mesh_one_copy_is_all(index: Index) -> None:
    copies = MeshCopies(CatalogStore(index.db), _Members(is_member=False, ids=[]), lambda: 2)
    assert copies.required() == 1
    assert await copies.other_holders({"1.1": SHA}) == {}
