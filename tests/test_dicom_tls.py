"""DICOM over TLS on the DIMSE port, with DCMTK's TLS options as the independent client."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from pydicom.data import get_testdata_file

from discovery.records import DicomRecord, dicom_instance_name
from tests.support import NodeProcess, dcmtk, storescu


def tls(node: NodeProcess) -> tuple[str, ...]:
    """DCMTK client options: TLS without a client certificate, trusting the node's own."""
    return ("+tla", "+cf", str(node.data_dir / "identity" / "node.crt"))


def test_echo_and_store_over_tls(make_node) -> None:
    node = make_node(extra_args=("--dicom-tls",)).start()
    assert dcmtk("echoscu", *tls(node), "-aec", node.aet, *node.address).returncode == 0
    assert storescu(node, [Path(get_testdata_file("CT_small.dcm"))], *tls(node)) == []
    assert node.status()["instances"] == 1


def test_plain_client_refused_and_silent_client_blocks_no_one(make_node) -> None:
    node = make_node(extra_args=("--dicom-tls",)).start()
    plain = dcmtk("echoscu", "-to", "5", "-aec", node.aet, *node.address)
    assert plain.returncode != 0  # no DICOM without TLS on this port
    assert "TLS handshake" in node.log()
    # A client that connects and never speaks holds only its own connection.
    with socket.create_connection(("127.0.0.1", node.dicom_port)):
        started = time.monotonic()
        echo = dcmtk("echoscu", *tls(node), "-aec", node.aet, *node.address)
        assert echo.returncode == 0, echo.stderr
        assert time.monotonic() - started < 5
    assert node.status()["instances"] == 0


def test_half_a_certificate_is_refused_at_start(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "run", "--data-dir", str(tmp_path / "n"),
         "--dicom-tls", "--dicom-tls-cert", str(cert)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "dicom_tls_cert and dicom_tls_key go together" in result.stderr


def test_tls_record_is_announced_as_dicom_tls() -> None:
    record = DicomRecord("ARCHIVE", "ARCHIVE", 11112, tls=True)
    assert record.service_type == "_dicom-tls._tcp.local."
    assert (dicom_instance_name("ARCHIVE", "n", False, record.service_type)
            == "ARCHIVE._dicom-tls._tcp.local.")
    assert DicomRecord("WS", "WSD", 104).service_type == "_dicom._tcp.local."
