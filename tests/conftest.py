from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from node.datadir import INDEX_FILE
from node.index import Index
from node.storage import Storage
from tests.mesh_support import start_founder
from tests.support import NodeProcess, ensure_on_path


@pytest.fixture(scope="session", autouse=True)
def _dcmtk_present() -> None:
    ensure_on_path("echoscu", "storescu", "findscu", "getscu", "movescu", "storescp")


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator:
    """Factory for node processes; every one is stopped at the end of the test."""
    nodes: list[NodeProcess] = []

    def make(name: str = "node", **kwargs) -> NodeProcess:
        node = NodeProcess(data_dir=tmp_path / name, **kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def node(make_node) -> NodeProcess:
    return make_node().start()


@pytest.fixture
def founder(make_node) -> NodeProcess:
    """Node A: creates a mesh and holds one stored instance (tests.mesh_support)."""
    return start_founder(make_node)


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    """An empty file store in a temporary data dir."""
    store = Storage(tmp_path / "data")
    store.prepare()
    return store


@pytest.fixture
async def index(storage: Storage) -> AsyncIterator[Index]:
    """The index of ``storage``'s data dir, open on the test's event loop."""
    idx = await Index.open(storage.root / INDEX_FILE)
    try:
        yield idx
    finally:
        await idx.close()
