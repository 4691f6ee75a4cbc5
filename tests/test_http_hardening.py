"""The HTTP port against the network (issue 21, HTTP risks): HTTPS with a configured or
the node's own certificate, no caching of answers that carry patient data, no version in
the Server header, and a bound on how long a client may take to send its headers."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom.data import get_testdata_file

from tests.support import NodeProcess

CT = Path(get_testdata_file("CT_small.dcm"))
HEADER_TIMEOUT = 2.0  # seconds, for the node under test


@dataclass
class HttpsNode(NodeProcess):
    """A node serving HTTPS; ``cafile`` is what the client trusts."""

    cafile: Path | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cafile))
        context.check_hostname = False  # the node's own certificate names no host
        return context

    def get_json(self, path: str) -> Any:
        url = f"https://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=5, context=self.context()) as rsp:
            return json.loads(rsp.read())


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, as a hospital CA would issue one."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pacs.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "http.crt", directory / "http.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def objects(node: NodeProcess) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (node.data_dir / "objects").rglob("*.dcm")}


@pytest.fixture
def https_node(tmp_path: Path) -> Iterator[HttpsNode]:
    cert, key = make_cert(tmp_path)
    node = HttpsNode(data_dir=tmp_path / "node", aet="HTTPS", cafile=cert,
                     extra_args=("--http-auth", "none", "--http-tls-cert", str(cert),
                                 "--http-tls-key", str(key))).start()
    yield node
    node.stop()


@pytest.fixture
def plain_node(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(data_dir=tmp_path / "plain", aet="PLAIN",
                       extra_args=("--http-auth", "none", "--http-header-timeout",
                                   str(HEADER_TIMEOUT))).start()
    yield node
    node.stop()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True,
                          text=True, timeout=60)


def test_https_with_a_configured_certificate(https_node: HttpsNode) -> None:
    node = https_node
    base = f"https://127.0.0.1:{node.http_port}"
    answered = curl("--cacert", str(node.cafile), "-w", "\n%{http_code}", f"{base}/api/status")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.endswith("\n200") and '"instances": 0' in answered.stdout
    # An upload over HTTPS is stored byte for byte.
    sent = CT.read_bytes()
    uploaded = curl("--cacert", str(node.cafile), "--data-binary", f"@{CT}",
                    "-w", "\n%{http_code}", f"{base}/api/instances")
    assert uploaded.stdout.endswith("\n200"), uploaded.stdout + uploaded.stderr
    sha = hashlib.sha256(sent).hexdigest()
    assert objects(node) == {f"{sha}.dcm": sent}
    # Plain HTTP to the HTTPS port gets no answer, and curl without the CA refuses.
    plain = curl(f"http://127.0.0.1:{node.http_port}/api/status")
    assert plain.returncode != 0 and '"instances"' not in plain.stdout
    untrusted = curl(f"{base}/api/status")
    assert untrusted.returncode == 60, untrusted.stderr  # certificate problem
    # `pacsmesh status` finds it with the same settings from the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSMESH_")}
    env.update(PACSMESH_HTTP_TLS_CERT=str(node.cafile), PACSMESH_HTTP_TLS_KEY=str(key_of(node)))
    status = subprocess.run(
        [sys.executable, "-m", "node.cli", "status", "--data-dir", str(node.data_dir),
         "--http-port", str(node.http_port), "--json"],
        capture_output=True, text=True, timeout=60, env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"]["instances"] == 1
    assert objects(node) == {f"{sha}.dcm": sent}
    assert node.status()["instances"] == 1


def key_of(node: HttpsNode) -> Path:
    assert node.cafile is not None
    return node.cafile.with_name("http.key")


def test_https_self_signed_uses_the_node_identity(tmp_path: Path) -> None:
    data_dir = tmp_path / "self"
    data_dir.mkdir()
    # In pacsmesh.toml, so that `pacsmesh status` on this data dir knows it too.
    (data_dir / "pacsmesh.toml").write_text('http_tls = "self-signed"\nhttp_auth = "none"\n')
    node = HttpsNode(data_dir=data_dir, aet="SELF", cafile=data_dir / "identity" / "node.crt")
    try:
        node.start()  # polls /api/status over HTTPS, trusting the identity certificate
        with socket.create_connection(("127.0.0.1", node.http_port), timeout=5) as raw, \
                node.context().wrap_socket(raw) as tls:
            presented = tls.getpeercert(binary_form=True)
        assert node.cafile is not None
        identity = x509.load_pem_x509_certificate(node.cafile.read_bytes())
        assert presented == identity.public_bytes(serialization.Encoding.DER)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PACSMESH_")}
        status = subprocess.run(
            [sys.executable, "-m", "node.cli", "status", "--data-dir", str(data_dir),
             "--http-port", str(node.http_port), "--json"],
            capture_output=True, text=True, timeout=60, env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["status"]["aet"] == "SELF"
        assert node.status()["instances"] == 0 and objects(node) == {}
    finally:
        node.stop()


def test_answers_are_not_cached_and_name_no_version(plain_node: NodeProcess) -> None:
    node = plain_node
    base = f"http://127.0.0.1:{node.http_port}"
    seen = []
    for path in ("/api/status", "/api/studies", "/api/nope"):
        request = urllib.request.Request(base + path)
        try:
            with urllib.request.urlopen(request, timeout=5) as rsp:
                headers = rsp.headers
        except urllib.error.HTTPError as exc:
            headers = exc.headers
        seen.append(path)
        assert headers["Cache-Control"] == "no-store", path
        assert headers["Server"] == "PACSmesh", path
    # An answer aiohttp writes itself (a malformed request) says no version either.
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=10) as sock:
        sock.sendall(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
        answer = sock.recv(65536)
    assert b"aiohttp" not in answer and b"Python" not in answer, answer
    assert node.status()["instances"] == 0 and objects(node) == {}


def test_slow_request_headers_are_cut_off(plain_node: NodeProcess) -> None:
    node = plain_node
    closed: dict[str, float] = {}

    def slow(name: str, dribble: bool) -> None:
        with socket.create_connection(("127.0.0.1", node.http_port), timeout=60) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /api/sta")  # half a request line
            try:
                while True:
                    if dribble:
                        sock.sendall(b"t")
                        sock.settimeout(0.3)
                    try:
                        if sock.recv(1024) == b"":
                            break
                    except TimeoutError:
                        continue
            except (BrokenPipeError, ConnectionResetError):
                pass
            closed[name] = time.monotonic() - started

    threads = [threading.Thread(target=slow, args=("silent", False)),
               threading.Thread(target=slow, args=("dribbling", True))]
    for t in threads:
        t.start()
    # Meanwhile a normal client is served, again and again.
    served = 0
    while any(t.is_alive() for t in threads):
        assert node.status()["instances"] == 0
        served += 1
        time.sleep(0.1)
        assert served < 600, "slow clients were never disconnected"
    for t in threads:
        t.join()
    assert served >= 2
    for name, after in closed.items():
        # Not before the bound, and well within a generous margin after it.
        assert HEADER_TIMEOUT - 0.5 <= after <= HEADER_TIMEOUT + 10, (name, after)
    # A request that completes in time is answered as ever, and nothing changed.
    assert node.status()["instances"] == 0 and objects(node) == {}
