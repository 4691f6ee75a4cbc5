"""The HTTP hardening settings (http_tls, http_tls_cert/key, http_header_timeout,
http_max_body): every source, their defaults, and a one-line error for each bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import (
    DEFAULT_HTTP_HEADER_TIMEOUT,
    DEFAULT_HTTP_MAX_BODY,
    ConfigError,
    load_config,
)
from tests.support import free_port


def pem_pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("cert")
    key.write_text("key")
    return cert, key


def test_defaults(tmp_path: Path) -> None:
    config = load_config({"data_dir": tmp_path}, env={})
    assert (config.http_tls, config.http_tls_cert, config.http_tls_key) == ("off", None, None)
    assert config.http_header_timeout == DEFAULT_HTTP_HEADER_TIMEOUT == 10.0
    assert config.http_max_body == DEFAULT_HTTP_MAX_BODY == 2**30


def test_a_certificate_switches_https_on(tmp_path: Path) -> None:
    cert, key = pem_pair(tmp_path)
    (tmp_path / "pacsmesh.toml").write_text(
        f'http_tls_cert = "{cert}"\nhttp_tls_key = "{key}"\nhttp_header_timeout = 3\n')
    config = load_config({"data_dir": tmp_path}, env={"PACSMESH_HTTP_MAX_BODY": "5000"})
    assert (config.http_tls, config.http_tls_cert, config.http_tls_key) == ("on", cert, key)
    assert (config.http_header_timeout, config.http_max_body) == (3.0, 5000)
    # Explicitly off wins over the files; the CLI wins over the file.
    off = load_config({"data_dir": tmp_path, "http_tls": "off"}, env={})
    assert off.http_tls == "off"
    assert load_config({"data_dir": tmp_path}, env={"PACSMESH_HTTP_TLS": "true"}).http_tls == "on"


def test_self_signed(tmp_path: Path) -> None:
    config = load_config({"data_dir": tmp_path, "http_tls": "Self-Signed"}, env={})
    assert config.http_tls == "self-signed" and config.http_tls_cert is None


@pytest.mark.parametrize(("settings", "message"), [
    ({"http_tls": "maybe"}, "http_tls must be one of off, on, self-signed"),
    ({"http_tls": "on"}, 'http_tls = "on" needs http_tls_cert and http_tls_key'),
    ({"http_tls_cert": "CERT"}, "http_tls_cert and http_tls_key go together"),
    ({"http_tls_cert": "CERT", "http_tls_key": "KEY", "http_tls": "self-signed"},
     "uses the node's own certificate"),
    ({"http_tls_cert": "/nonexistent/c.pem", "http_tls_key": "KEY"},
     "http_tls_cert: no such file"),
    ({"http_header_timeout": "0"}, "http_header_timeout must be a number of seconds"),
    ({"http_header_timeout": "soon"}, "http_header_timeout must be a number of seconds"),
    ({"http_max_body": "0"}, "http_max_body must be a whole number of bytes >= 1"),
    ({"http_max_body": "1.5"}, "http_max_body must be a whole number of bytes >= 1"),
])
def test_bad_values_are_one_line_errors(tmp_path: Path, settings: dict[str, str],
                                        message: str) -> None:
    cert, key = pem_pair(tmp_path)
    given = {k: str(cert) if v == "CERT" else str(key) if v == "KEY" else v
             for k, v in settings.items()}
    with pytest.raises(ConfigError) as exc:
        load_config({"data_dir": tmp_path / "d", **given}, env={})
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_node_refuses_an_unusable_certificate(tmp_path: Path) -> None:
    """A certificate that is not PEM stops the node at start with one line, port unbound."""
    cert, key = pem_pair(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSMESH_")}
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "run", "--data-dir", str(tmp_path / "node"),
         "--bind", "127.0.0.1", "--no-mdns", "--dicom-port", str(free_port()),
         "--http-port", str(free_port()), "--mesh-port", str(free_port()),
         "--http-tls-cert", str(cert), "--http-tls-key", str(key)],
        capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    # One line naming the certificate: from the TLS context, or from the alerts' reading
    # of its expiry, whichever start-up reaches first.
    assert ("for HTTPS" in last or "HTTPS certificate" in last) and str(cert) in last, \
        result.stderr
