"""The change feed a member pulls from another: only members, only what is new."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydicom import dcmread

from discovery.probe import ProbeFailed, call
from discovery.roster import Roster
from discovery.tls import member_context
from node.identity import NodeIdentity, load_or_create_identity
from replication.feed import CHANGES_PATH
from tests.mesh_support import invite, joiner, mesh_view, wait_for
from tests.support import NodeProcess, one_file_per_instance, storescu


def _changes(caller: NodeIdentity, server: NodeProcess, since: int, limit: int = 1000) -> Any:
    roster = Roster.from_json(json.loads((server.data_dir / "mesh" / "roster.json").read_text()))
    server_id = mesh_view(server)["node_id"]
    context = member_context(caller, roster.evaluate().members[server_id].cert_pem)

    async def go() -> Any:
        async with aiohttp.ClientSession() as session:
            return await call(session, "GET", "127.0.0.1", server.mesh_port, CHANGES_PATH, 5,
                              context, params={"since": str(since), "limit": str(limit)})

    return asyncio.run(go())


def test_member_pulls_changes_since_its_checkpoint(make_node, founder: NodeProcess) -> None:
    b = joiner(make_node, founder, "nodeb", invite(founder)).start()
    wait_for(lambda: mesh_view(b)["member"])
    me = load_or_create_identity(b.data_dir)
    first = _changes(me, founder, 0)
    assert [c["kind"] for c in first["changes"]] == ["add"]  # CT_small, stored by the fixture
    change = first["changes"][0]
    stored = next((founder.data_dir / "objects").rglob("*.dcm"))
    assert change["sha256"] == stored.stem
    assert change["study_uid"] == str(dcmread(stored, stop_before_pixels=True).StudyInstanceUID)
    assert first["more"] is False
    checkpoint = first["next"]

    samples = one_file_per_instance()[:5]
    assert storescu(founder, samples) == []
    page = _changes(me, founder, checkpoint, limit=3)
    assert len(page["changes"]) == 3 and page["more"] is True
    rest = _changes(me, founder, page["next"])
    assert len(rest["changes"]) == 2 and rest["more"] is False
    seen = [c["seq"] for c in page["changes"] + rest["changes"]]
    assert seen == sorted(seen) and min(seen) > checkpoint


def test_strangers_get_no_changes(founder: NodeProcess, tmp_path: Path) -> None:
    stranger = load_or_create_identity(tmp_path / "stranger")
    with pytest.raises(ProbeFailed):
        _changes(stranger, founder, 0)
    assert "CERTIFICATE_VERIFY_FAILED" in founder.log() or "refused" in founder.log()
