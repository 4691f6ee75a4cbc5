"""Joining without a man in the middle, and a refused joiner that backs off: real node
processes on loopback, and a stand-in TLS server with its own certificate."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from discovery.tls import server_context
from node.identity import load_or_create_identity
from tests.mesh_support import cli, joiner, mesh_view, wait_for
from tests.support import NodeProcess

STAND_IN_HOST = "127.0.0.2"  # loopback too, but not where the nodes listen


class StandIn:
    """A TLS server with a certificate of its own, keeping every byte sent to it."""

    def __init__(self, cert_dir: Path, port: int) -> None:
        identity = load_or_create_identity(cert_dir, "NODEA")  # claims the founder's name
        self.context = server_context(identity, [])
        self.context.verify_mode = ssl.CERT_NONE
        self.sock = socket.create_server((STAND_IN_HOST, port))
        self.connections = 0
        self.received = b""
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._take, args=(raw,), daemon=True).start()

    def _take(self, raw: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        raw.settimeout(10)
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                while chunk := tls.recv(65536):
                    with self._lock:
                        self.received += chunk
        except (OSError, ssl.SSLError):
            pass  # a client that refused our certificate, or hung up: all we want to know

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def stand_in(tmp_path: Path, founder: NodeProcess) -> Iterator[StandIn]:
    server = StandIn(tmp_path / "stand-in", founder.mesh_port)
    yield server
    server.close()


def _invite(node: NodeProcess, *extra: str) -> tuple[str, list[str]]:
    result = cli("mesh", "invite", "--data-dir", str(node.data_dir), *extra)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    return lines[-1], lines[:-1]


def _holdings(node: NodeProcess) -> tuple[Any, Any]:
    status = node.status()
    return status["instances"], status["bytes"]


def test_stand_in_at_the_seed_address_learns_nothing(
    make_node, founder: NodeProcess, stand_in: StandIn
) -> None:
    before = _holdings(founder)
    token, said = _invite(founder, "--seed", f"{STAND_IN_HOST}:{founder.mesh_port}")
    assert said[1].startswith("pins the certificate of NODEA (")
    assert said[2].startswith(f"seed {STAND_IN_HOST}:{founder.mesh_port}: no member proved")
    # The token names the stand-in's address first; the genuine founder is the --peer.
    c = joiner(make_node, founder, "nodec", token).start()
    wait_for(lambda: mesh_view(c)["member"], 60)
    assert stand_in.connections >= 1
    assert stand_in.received == b""  # no request, no token: not one byte after the handshake
    assert (f"join through {STAND_IN_HOST}:{founder.mesh_port} refused: the server's "
            "certificate") in c.log()
    assert {m["aet"] for m in mesh_view(founder)["members"]} == {"NODEA", "NODEC"}
    assert _holdings(founder) == before


def test_named_seed_is_pinned_and_joined_through(make_node, founder: NodeProcess) -> None:
    b = joiner(make_node, founder, "nodeb", _invite(founder, "--no-seed")[0]).start()
    wait_for(lambda: mesh_view(b)["member"], 60)
    token, said = _invite(founder, "--seed", f"127.0.0.1:{b.mesh_port}")
    assert said[1].startswith("pins the certificate of NODEA (") and ", NODEB (" in said[1]
    # No --peer: the seed, member B, is the only way in.
    c = make_node("nodec", aet="NODEC", extra_args=("--join", token)).start()
    wait_for(lambda: mesh_view(c)["member"], 60)
    assert f"joined mesh {mesh_view(c)['mesh']} through 127.0.0.1:{b.mesh_port}" in c.log()
    assert "refused" not in c.log()


def test_token_without_pins_still_joins_and_says_so(make_node, founder: NodeProcess) -> None:
    before = _holdings(founder)
    token, said = _invite(founder, "--no-seed", "--no-pin")
    assert said[1].startswith("this token pins no member's certificate")
    b = joiner(make_node, founder, "nodeb", token).start()
    wait_for(lambda: mesh_view(b)["member"], 60)
    assert _holdings(founder) == before


def test_refused_join_backs_off_and_logs_once(
    make_node, founder: NodeProcess, tmp_path: Path
) -> None:
    """A token of another mesh, without pins, is refused by the founder on every try: the
    joiner comes back a few times in 20 s (not every second), and says so once."""
    other = tmp_path / "other-mesh"
    assert cli("mesh", "init", "--data-dir", str(other)).returncode == 0
    foreign = cli("mesh", "invite", "--data-dir", str(other), "--no-seed",
                  "--no-pin").stdout.split()[-1]
    before, version = _holdings(founder), mesh_view(founder)["roster_version"]
    c = joiner(make_node, founder, "nodec", foreign).start()
    wait_for(lambda: "mesh join from" in founder.log(), 30)
    start = time.monotonic()
    wait_for(lambda: time.monotonic() - start > 20, 30)
    refusals = founder.log().count("mesh join from")
    assert 1 <= refusals <= 6, refusals  # ~20 before the back-off
    assert c.log().count("join refused by") == 1
    assert c.log().count("invite is for another mesh") == 1
    joining = mesh_view(c)["join"]
    assert joining["state"] == "joining" and joining["last_outcome"] == "refused"
    assert not mesh_view(c)["member"]
    assert _holdings(founder) == before
    assert mesh_view(founder)["roster_version"] == version


def test_used_up_token_stops_with_one_line_error(make_node, founder: NodeProcess) -> None:
    token = _invite(founder, "--no-seed", "--uses", "1")[0]
    b = joiner(make_node, founder, "nodeb", token).start()
    wait_for(lambda: mesh_view(b)["member"], 60)
    before, version = _holdings(founder), mesh_view(founder)["roster_version"]
    c = joiner(make_node, founder, "nodec", token).start()
    wait_for(lambda: mesh_view(c)["join"]["state"] == "stopped", 60)
    errors = [line for line in c.log().splitlines() if "cannot join the mesh" in line]
    assert len(errors) == 1 and "invite has no uses left" in errors[0]
    shown = cli("mesh", "status", "--data-dir", str(c.data_dir), "--http-port",
                str(c.http_port))
    assert shown.returncode == 1
    assert shown.stderr.strip().startswith(
        "pacsmesh: error: not a member yet: join stopped: invite has no uses left")
    status = cli("status", "--data-dir", str(c.data_dir), "--http-port", str(c.http_port))
    assert "mesh: join stopped: invite has no uses left" in status.stdout
    # It asked once, and never again.
    start = time.monotonic()
    wait_for(lambda: time.monotonic() - start > 5, 10)
    assert founder.log().count("invite has no uses left") == 1
    assert _holdings(founder) == before
    assert mesh_view(founder)["roster_version"] == version
