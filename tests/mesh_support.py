"""Shared by the mesh tests: CLI calls, tokens, and a founding node holding one instance."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.data import get_testdata_file

from tests.support import NodeProcess, storescu


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, timeout=60)


def invite(node: NodeProcess, *extra: str) -> str:
    result = cli("mesh", "invite", "--data-dir", str(node.data_dir), "--no-seed", *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def mesh_view(node: NodeProcess) -> dict[str, Any]:
    return node.get_json("/api/mesh")


def peer_states(node: NodeProcess) -> dict[str, str]:
    return {p["aet"]: p["state"] for p in node.get_json("/api/peers")}


def wait_for(
    predicate: Callable[[], bool], timeout: float = 20, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError("condition not met")


def start_founder(make_node: Callable[..., NodeProcess], **kwargs: Any) -> NodeProcess:
    """Node A: creates the mesh and holds one stored instance."""
    node: NodeProcess = make_node("a", aet="NODEA", **kwargs)
    assert cli("mesh", "init", "--data-dir", str(node.data_dir), "--aet", "NODEA").returncode == 0
    node.start()
    assert storescu(node, [Path(get_testdata_file("CT_small.dcm"))]) == []
    return node


def joiner(
    make_node: Callable[..., NodeProcess], founder: NodeProcess, name: str, token: str,
    **kwargs: Any,
) -> NodeProcess:
    return make_node(name, aet=name.upper(), extra_args=(
        "--join", token, "--peer", f"127.0.0.1:{founder.mesh_port}"), **kwargs)


