"""HTTP bearer tokens with roles: each role on each endpoint class, revocation, hashing,
and the default for installs without tokens (loopback reads only)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tests.support import NodeProcess
from tests.test_audit import audit_rows, wait_for_rows

CT = Path(get_testdata_file("CT_small.dcm"))
# (method, path, body): one endpoint per class
READ = ("GET", "/api/studies", None)
UPLOAD = ("POST", "/api/instances", CT.read_bytes())
ADMIN = ("GET", "/api/audit", None)


def call(node: NodeProcess, endpoint: tuple[str, str, bytes | None],
         token: str | None = None) -> int:
    method, path, body = endpoint
    request = urllib.request.Request(f"http://127.0.0.1:{node.http_port}{path}", data=body,
                                     method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as rsp:
            return int(rsp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def pacsmesh(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "token", *args, "--data-dir", str(node.data_dir)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def add_token(node: NodeProcess, role: str) -> str:
    return pacsmesh(node, "add", "--role", role, "--name", f"test-{role}").stdout.splitlines()[-1]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    running = NodeProcess(data_dir=tmp_path / "node", aet="ARCHIVE").start()
    yield running
    running.stop()


def test_without_tokens_loopback_reads_and_nothing_else(node: NodeProcess) -> None:
    assert call(node, READ) == 200
    assert call(node, UPLOAD) == 401
    assert call(node, ADMIN) == 401


def test_each_role_on_each_endpoint_class(node: NodeProcess) -> None:
    tokens = {role: add_token(node, role) for role in ("admin", "reader", "uploader")}
    expected = {
        None: {"read": 401, "upload": 401, "admin": 401},
        "reader": {"read": 200, "upload": 403, "admin": 403},
        "uploader": {"read": 403, "upload": 200, "admin": 403},
        "admin": {"read": 200, "upload": 200, "admin": 200},
    }
    for role, answers in expected.items():
        token = tokens[role] if role else None
        got = {name: call(node, endpoint, token) for name, endpoint in
               (("read", READ), ("upload", UPLOAD), ("admin", ADMIN))}
        assert got == answers, role
    assert call(node, READ, "pmt_not-a-token") == 401
    assert call(node, ("GET", "/api/status", None), tokens["reader"]) == 200


def test_revoked_token_is_refused(node: NodeProcess) -> None:
    token = add_token(node, "reader")
    assert call(node, READ, token) == 200
    pacsmesh(node, "revoke", token)
    assert call(node, READ, token) == 401
    # Revoking by id works too, and over HTTP by an admin.
    other = add_token(node, "reader")
    admin = add_token(node, "admin")
    listed = pacsmesh(node, "list", "--json").stdout
    other_id = [line for line in listed.splitlines() if '"id"' in line][1].split('"')[3]
    assert call(node, ("DELETE", f"/api/tokens/{other_id}", None), admin) == 200
    assert call(node, READ, other) == 401


def test_tokens_are_stored_hashed(node: NodeProcess) -> None:
    token = add_token(node, "admin")
    assert call(node, READ, token) == 200
    listed = pacsmesh(node, "list", "--json").stdout
    assert token not in listed
    raw = token.encode()
    for path in node.data_dir.rglob("*"):
        if path.is_file():
            assert raw not in path.read_bytes(), path


def test_http_access_is_audited(node: NodeProcess) -> None:
    token = add_token(node, "reader")
    call(node, READ, token)
    call(node, ADMIN, token)
    rows = wait_for_rows(node, lambda r: len(r) >= 2, "--action", "login")
    assert any(r["user"] == "test-reader (reader)" and r["detail"] == "GET /api/studies: 200"
               for r in rows)
    refusals = audit_rows(node, "--action", "refusal")
    assert any(r["detail"] == "GET /api/audit: the admin role is needed" for r in refusals)


def test_status_command_sends_the_token_from_the_environment(node: NodeProcess) -> None:
    token = add_token(node, "reader")
    command = [sys.executable, "-m", "node.cli", "status", "--json",
               "--http-port", str(node.http_port)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "401" in refused.stderr
    answered = subprocess.run(command, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PACSMESH_TOKEN": token})
    assert answered.returncode == 0 and '"instances"' in answered.stdout, answered.stderr
