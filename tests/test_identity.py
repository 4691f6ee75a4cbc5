"""A node's identity: made once, owner-only, stable, and what /api/status shows."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from node.identity import (
    NODE_ID_RE,
    IdentityError,
    load_or_create_identity,
    node_id_for,
    normalize_node_id,
)
from tests.support import NodeProcess


def test_identity_is_created_once_with_owner_only_files(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path)
    again = load_or_create_identity(tmp_path)
    assert first.node_id == again.node_id == node_id_for(first.cert_der)
    assert NODE_ID_RE.match(first.node_id), first.node_id
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.key_path.parent.stat().st_mode) == 0o700


def test_pasted_node_ids_are_accepted_in_any_form(tmp_path: Path) -> None:
    node_id = load_or_create_identity(tmp_path).node_id
    assert normalize_node_id(node_id.lower().replace("-", " ")) == node_id
    with pytest.raises(IdentityError):
        normalize_node_id("not-a-node-id")


def test_mismatched_key_and_certificate_are_refused(tmp_path: Path) -> None:
    a = load_or_create_identity(tmp_path / "a")
    b = load_or_create_identity(tmp_path / "b")
    b.cert_path.write_bytes(a.cert_path.read_bytes())
    with pytest.raises(IdentityError, match="do not belong together"):
        load_or_create_identity(tmp_path / "b")


def test_running_node_shows_its_id_and_keeps_it_across_restarts(make_node) -> None:
    node: NodeProcess = make_node().start()
    node_id = node.status()["node_id"]
    assert NODE_ID_RE.match(node_id)
    node.stop()
    node.start()
    assert node.status()["node_id"] == node_id
