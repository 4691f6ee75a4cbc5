"""Who may take part in a mesh: joins, and every kind of refusal, between real node
processes on loopback. Each refusal leaves the stored data and the roster unchanged."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from discovery.roster import Roster
from discovery.tls import client_context, member_context, server_context
from node.identity import load_or_create_identity
from tests.mesh_support import cli, invite, joiner, mesh_view, peer_states, wait_for
from tests.support import NodeProcess, dcmtk


def _unchanged(node: NodeProcess, before: dict[str, Any], roster_version: int) -> None:
    status = node.status()
    assert (status["instances"], status["bytes"]) == (before["instances"], before["bytes"])
    assert mesh_view(node)["roster_version"] == roster_version


def test_join_through_one_static_peer_only(make_node, founder: NodeProcess) -> None:
    b = joiner(make_node, founder, "nodeb", invite(founder)).start()
    wait_for(lambda: mesh_view(b)["member"])
    wait_for(lambda: peer_states(founder).get("NODEB") == "alive"
             and peer_states(b).get("NODEA") == "alive")
    members = {m["aet"] for m in mesh_view(founder)["members"]}
    assert members == {"NODEA", "NODEB"}
    entry = next(p for p in founder.get_json("/api/peers") if p["aet"] == "NODEB")
    assert entry["first_seen"] <= entry["last_seen"] and entry["last_seen"].endswith("+00:00")
    assert entry["mesh_port"] == b.mesh_port and entry["dicom_port"] == b.dicom_port
    assert mesh_view(b)["mesh"] == mesh_view(founder)["mesh"]


def test_nodes_joining_at_once_are_all_members_everywhere(
    make_node, founder: NodeProcess
) -> None:
    """Admissions that overlap (a site powering up together) are all kept: none is lost
    from the admitting node's roster while another is being written to its disk."""
    token = invite(founder, "--uses", "6")
    names = [f"node{c}" for c in "bcdefg"]
    joiners = [joiner(make_node, founder, n, token) for n in names]
    with ThreadPoolExecutor(len(joiners)) as pool:
        list(pool.map(lambda n: n.start(timeout=60), joiners))
    everyone = {"NODEA", *(n.upper() for n in names)}
    for node in (founder, *joiners):
        wait_for(lambda node=node: {m["aet"] for m in mesh_view(node)["members"]} == everyone,
                 60)
    wait_for(lambda: set(peer_states(founder).values()) == {"alive"}
             and len(peer_states(founder)) == len(joiners), 60)
    assert "not a member" not in founder.log()


def test_single_use_token_admits_one_node_only(make_node, founder: NodeProcess) -> None:
    token = invite(founder, "--uses", "1")
    b = joiner(make_node, founder, "nodeb", token).start()
    wait_for(lambda: mesh_view(b)["member"])
    before, version = founder.status(), mesh_view(founder)["roster_version"]
    c = joiner(make_node, founder, "nodec", token).start()
    wait_for(lambda: "invite has no uses left" in founder.log())
    assert not mesh_view(c)["member"]
    assert "NODEC" not in peer_states(founder)
    _unchanged(founder, before, version)


def test_expired_token_is_refused_at_start(make_node, founder: NodeProcess) -> None:
    token = invite(founder, "--expires", "1s")
    time.sleep(1.5)
    late = joiner(make_node, founder, "late", token)
    result = subprocess.run(late.command(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "pacsmesh: error: cannot join: the invite token has expired"
    ]


def test_token_of_another_mesh_is_refused(make_node, founder: NodeProcess, tmp_path: Path) -> None:
    other = tmp_path / "other-mesh"
    assert cli("mesh", "init", "--data-dir", str(other)).returncode == 0
    foreign = cli("mesh", "invite", "--data-dir", str(other), "--no-seed").stdout.split()[-1]
    before, version = founder.status(), mesh_view(founder)["roster_version"]
    c = joiner(make_node, founder, "nodec", foreign).start()
    # The founder belongs to another mesh, so the stranger cannot even find a member.
    time.sleep(3)
    assert not mesh_view(c)["member"]
    assert "NODEC" not in peer_states(founder)
    _unchanged(founder, before, version)


def _https_get(port: int, context: ssl.SSLContext, path: str = "/mesh/hello") -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return tls.recv(4096).decode(errors="replace")


def _answer(port: int, context: ssl.SSLContext, path: str) -> str:
    try:
        return _https_get(port, context, path)
    except (ssl.SSLError, ConnectionError):
        return ""


def test_unknown_and_forged_certificates_are_refused(
    make_node, founder: NodeProcess, tmp_path: Path
) -> None:
    b = joiner(make_node, founder, "nodeb", invite(founder)).start()
    wait_for(lambda: mesh_view(b)["member"])
    before, version = founder.status(), mesh_view(founder)["roster_version"]
    b_id = mesh_view(b)["node_id"]
    # A stranger whose certificate names itself after member B (same AE title as CN).
    stranger = load_or_create_identity(tmp_path / "stranger", common_name="NODEB")
    context = client_context(stranger, [])
    context.verify_mode = ssl.CERT_NONE
    # In TLS 1.3 the client finishes its side first; the server's refusal shows as a
    # closed connection with no answer.
    assert _answer(founder.mesh_port, context, f"/mesh/hello?node_id={b_id}") == ""
    wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in founder.log())
    # B's certificate is public (it is in the roster), but without B's key it is useless:
    # a server holding another key cannot pass as B to a member checking for B.
    forged_server = server_context(stranger, [])
    assert not _handshake_succeeds(forged_server, member_context(
        load_or_create_identity(founder.data_dir), mesh_member_cert(b, b_id)))
    _unchanged(founder, before, version)


def mesh_member_cert(node: NodeProcess, node_id: str) -> str:
    roster = Roster.from_json(json.loads((node.data_dir / "mesh" / "roster.json").read_text()))
    return roster.evaluate().members[node_id].cert_pem


def _handshake_succeeds(server: ssl.SSLContext, client: ssl.SSLContext) -> bool:
    """Run a TLS handshake between two contexts in memory."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_side=False)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side, out, other_in in ((c, c_out, s_in), (s, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return False
            other_in.write(out.read())
    try:
        c.do_handshake()
        s.do_handshake()
    except ssl.SSLError:
        return False
    return True


def test_join_works_while_the_admin_node_is_down(make_node, founder: NodeProcess) -> None:
    token = invite(founder, "--uses", "2")
    b = joiner(make_node, founder, "nodeb", token).start()
    wait_for(lambda: mesh_view(b)["member"])
    # A token pins the members of its day: C's is made once B is one.
    token = invite(founder)
    founder.stop()  # the admin's machine is off; B alone admits C
    c = make_node("nodec", aet="NODEC", extra_args=(
        "--join", token, "--peer", f"127.0.0.1:{b.mesh_port}")).start()
    wait_for(lambda: mesh_view(c)["member"])
    wait_for(lambda: peer_states(b).get("NODEC") == "alive")
    admitted = {m["aet"]: m["admitted_by"] for m in mesh_view(c)["members"]}
    assert admitted["NODEC"] == mesh_view(b)["node_id"]
    # When the admin's node returns it learns of C from the roster that spread.
    founder.start()
    wait_for(lambda: "NODEC" in {m["aet"] for m in mesh_view(founder)["members"]}, 30)


def test_revoked_node_is_refused_everywhere(make_node, founder: NodeProcess) -> None:
    token = invite(founder, "--uses", "2")
    b = joiner(make_node, founder, "nodeb", token).start()
    c = joiner(make_node, founder, "nodec", token).start()
    wait_for(lambda: peer_states(founder).get("NODEB") == "alive")
    wait_for(lambda: peer_states(c).get("NODEB") == "alive")
    b_id = mesh_view(b)["node_id"]
    before = founder.status()
    result = cli("mesh", "revoke", "--data-dir", str(founder.data_dir), b_id.lower())
    assert result.returncode == 0, result.stderr
    wait_for(lambda: b_id in mesh_view(founder)["revoked"])
    wait_for(lambda: "NODEB" not in peer_states(founder))
    wait_for(lambda: "revoked" in founder.log() and "refused /mesh/hello" in founder.log())
    wait_for(lambda: peer_states(b).get("NODEA") in ("suspect", "dead"))
    # The revocation spreads: C, which never talked to the admin about it, refuses B too.
    wait_for(lambda: b_id in mesh_view(c)["revoked"])
    wait_for(lambda: "NODEB" not in peer_states(c))
    _unchanged(founder, before, mesh_view(founder)["roster_version"])
    # B, once it holds the roster that revokes it, still starts and serves alone.
    b.stop()
    roster = founder.data_dir / "mesh" / "roster.json"
    (b.data_dir / "mesh" / "roster.json").write_text(roster.read_text())
    b.start()
    assert not mesh_view(b)["member"]
    assert "working alone" in b.log()
    assert dcmtk("echoscu", "-aec", b.aet, *b.address).returncode == 0


def test_tampered_roster_entry_is_ignored(make_node, founder: NodeProcess, tmp_path: Path) -> None:
    b = joiner(make_node, founder, "nodeb", invite(founder)).start()
    wait_for(lambda: mesh_view(b)["member"])
    b.stop()
    path = b.data_dir / "mesh" / "roster.json"
    data = json.loads(path.read_text())
    stranger = load_or_create_identity(tmp_path / "stranger")
    forged = dict(data["entries"][-1], aet="INTRUDER", cert=stranger.cert_pem.decode(),
                  node_id=stranger.node_id)
    data["entries"].append(forged)
    path.write_text(json.dumps(data))
    b.start()
    wait_for(lambda: "roster entry" in b.log() and "ignored" in b.log())
    assert stranger.node_id not in {m["node_id"] for m in mesh_view(b)["members"]}
    assert mesh_view(b)["member"]


def test_tls12_and_plain_http_are_refused_with_a_log_line(founder: NodeProcess) -> None:
    before, version = founder.status(), mesh_view(founder)["roster_version"]
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _https_get(founder.mesh_port, old)
    with socket.create_connection(("127.0.0.1", founder.mesh_port), timeout=5) as raw:
        raw.sendall(b"GET /mesh/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200" not in raw.recv(4096)
    wait_for(lambda: founder.log().count("TLS handshake failed") >= 2)
    assert "UNSUPPORTED_PROTOCOL" in founder.log() or "VERSION" in founder.log()
    _unchanged(founder, before, version)


def test_a_second_node_with_a_members_title_is_refused(make_node, founder: NodeProcess) -> None:
    token = invite(founder, "--uses", "3")
    b = joiner(make_node, founder, "nodeb", token).start()
    wait_for(lambda: mesh_view(b)["member"])
    wait_for(lambda: len(mesh_view(founder)["members"]) == 2)
    before, version = founder.status(), mesh_view(founder)["roster_version"]
    c = make_node("nodec", aet="NODEB", extra_args=(
        "--join", token, "--peer", f"127.0.0.1:{founder.mesh_port}")).start()
    wait_for(lambda: "is already held by member" in c.log())
    assert "mesh join from 127.0.0.1 refused: AE title 'NODEB' is already held by member" \
        in founder.log()
    assert "AE title 'NODEB' is already held by member" in c.log()
    assert not mesh_view(c)["member"]
    for node in (founder, b):
        assert [m["aet"] for m in mesh_view(node)["members"]].count("NODEB") == 1
    refusals = cli("audit", "--data-dir", str(founder.data_dir), "--action", "refusal",
                   "--json")
    assert "AE title 'NODEB' is already held" in refusals.stdout
    _unchanged(founder, before, version)
