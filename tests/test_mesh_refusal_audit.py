"""Refused mesh connections are audit rows, rate-limited per address (issue 21): a TLS
client without a certificate and one with an unknown certificate, against a real node."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

from discovery.tls import client_context
from node.identity import load_or_create_identity
from tests.mesh_support import cli, mesh_view, wait_for
from tests.support import NodeProcess

ATTEMPTS = 50


def _get(port: int, context: ssl.SSLContext, source: str) -> str:
    """One GET over TLS from ``source`` (any 127/8 address is loopback on Linux)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=(source, 0)) as raw:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"GET /mesh/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return tls.recv(4096).decode(errors="replace")
    except (ssl.SSLError, ConnectionError):
        return ""  # TLS 1.3: the server's refusal of our certificate is a closed connection


def _mesh_refusals(node: NodeProcess) -> list[dict[str, Any]]:
    result = cli("audit", "--data-dir", str(node.data_dir), "--action", "refusal", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [r for r in rows if r["detail"].startswith("mesh API:")]


def test_tls_refusals_are_audited_a_few_rows_for_many_attempts(
    founder: NodeProcess, tmp_path: Path
) -> None:
    before, version = founder.status(), mesh_view(founder)["roster_version"]
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.check_hostname, no_cert.verify_mode = False, ssl.CERT_NONE
    stranger = client_context(load_or_create_identity(tmp_path / "stranger"), [])
    stranger.verify_mode = ssl.CERT_NONE
    # The first of each: curl without a certificate, and a client with an unknown one.
    curl = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
         "--interface", "127.0.0.1", f"https://127.0.0.1:{founder.mesh_port}/mesh/hello"],
        capture_output=True, text=True, timeout=30)
    assert curl.stdout == "403"
    assert _get(founder.mesh_port, stranger, "127.0.0.2") == ""
    wait_for(lambda: len(_mesh_refusals(founder)) == 2)
    rows = {r["address"]: r for r in _mesh_refusals(founder)}
    assert rows["127.0.0.1"]["outcome"] == "refused"
    assert rows["127.0.0.1"]["detail"] == "mesh API: no certificate (GET /mesh/hello)"
    assert "TLS handshake failed" in rows["127.0.0.2"]["detail"]
    # A scanner's worth: counted, not recorded.
    for _ in range(ATTEMPTS - 1):
        assert "403" in _get(founder.mesh_port, no_cert, "127.0.0.1")
        assert _get(founder.mesh_port, stranger, "127.0.0.2") == ""
    wait_for(lambda: founder.log().count("TLS handshake failed") >= ATTEMPTS)
    # A refusal from a third address: once its row is in, every earlier one would be.
    assert _get(founder.mesh_port, stranger, "127.0.0.3") == ""
    wait_for(lambda: "127.0.0.3" in {r["address"] for r in _mesh_refusals(founder)})
    assert sorted(r["address"] for r in _mesh_refusals(founder)) == [
        "127.0.0.1", "127.0.0.2", "127.0.0.3"]
    # Nothing lost or changed by the refusals.
    status = founder.status()
    assert (status["instances"], status["bytes"]) == (before["instances"], before["bytes"])
    assert mesh_view(founder)["roster_version"] == version
