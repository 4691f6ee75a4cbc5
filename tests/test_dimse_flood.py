"""The DICOM port against connection floods (issue 21, defect 3): raw sockets that start
a PDU and stop, from several loopback addresses, while a known modality works."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tests.mesh_support import wait_for
from tests.support import (
    NodeProcess,
    dataset_bytes,
    dcmtk,
    getscu_instance,
    sop_instance_uid,
)
from tests.test_audit import audit_rows
from tests.test_dicom_tls import tls as tls_args
from tests.test_faults import _send_files_as_they_are, associate, contexts_for, store

pytestmark = pytest.mark.usefixtures(_send_files_as_they_are.__name__)

MODALITY = "MODALITY"
# An A-ASSOCIATE-RQ's first 8 bytes: type 0x01, reserved, a length of 68, then the
# protocol version; the rest never comes.
PARTIAL_REQUEST = b"\x01\x00" + struct.pack(">L", 68) + b"\x00\x01"
# A P-DATA-TF header claiming 0xFFFFFFFF bytes of PDVs, and then nothing.
HUGE_PDATA = b"\x04\x00" + struct.pack(">L", 0xFFFFFFFF)


def _env(**settings: object) -> dict[str, str]:
    env = dict(os.environ)
    env.update({f"PACSMESH_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def _node(make_node, **settings: object) -> NodeProcess:
    node: NodeProcess = make_node(
        aet="PACS", modalities=(f"{MODALITY}@127.0.0.1:{11112}",), env=_env(**settings))
    return node.start()


def _connect(node: NodeProcess, source: str, first_bytes: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.dicom_port), timeout=5,
                                    source_address=(source, 0))
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def _closed(sock: socket.socket) -> bool:
    """The node has closed this connection (never blocks)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b"" or _closed(sock)
    except BlockingIOError:
        return False
    except OSError:
        return True


@contextmanager
def _flood(node: NodeProcess, count: int, first_bytes: bytes,
           sources: tuple[str, ...] = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5",
                                       "127.0.0.6")) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        socks = [stack.enter_context(_connect(node, sources[i % len(sources)], first_bytes))
                 for i in range(count)]
        yield socks


def _echo(node: NodeProcess, aet: str) -> tuple[bool, float, str]:
    start = time.monotonic()
    result = dcmtk("echoscu", "-aet", aet, "-aec", node.aet, *node.address, timeout=60)
    return result.returncode == 0, time.monotonic() - start, result.stderr


FILES = ("CT_small.dcm", "MR_small.dcm")


def _files() -> list[Path]:
    return [Path(get_testdata_file(name)) for name in FILES]


def _store(node: NodeProcess) -> list[int | None]:
    """C-STORE the files as they are (pynetdicom), as the configured modality."""
    assoc = associate(node, contexts_for(_files()), title=MODALITY)
    try:
        return [store(assoc, path) for path in _files()]
    finally:
        assoc.release()


def _nothing_lost(node: NodeProcess, out: Path) -> None:
    """Every instance sent is stored, and comes back as the very bytes that were sent."""
    # The flood's slots come back as the node sees each connection end, a moment after
    # the test closed them; until then getscu's AE (known by title only) has no slot.
    wait_for(lambda: _echo(node, "GETSCU")[0], timeout=20)
    assert node.status()["instances"] == len(FILES)
    for path in _files():
        got = getscu_instance(node, out / path.stem, sop_instance_uid(path))
        assert dataset_bytes(got) == dataset_bytes(path)


def test_partial_association_requests_are_closed_within_the_acse_timeout(make_node,
                                                                          tmp_path) -> None:
    acse = 3.0
    node = _node(make_node, acse_timeout=acse, pdu_timeout=600, max_associations=64,
                 max_associations_per_address=64, reserved_associations=8)
    start = time.monotonic()
    with _flood(node, 40, PARTIAL_REQUEST) as partial, _flood(node, 10, b"") as silent:
        socks = partial + silent  # and ten that send nothing at all
        wait_for(lambda: all(_closed(s) for s in socks), timeout=acse + 15)
        elapsed = time.monotonic() - start
        # Admitted (not turned away at once), then closed by the deadline.
        assert elapsed >= acse * 0.8, elapsed
    # Logged, throttled: one line per address, not one per connection.
    closed = [line for line in node.log().splitlines()
              if "closed: association request not complete within the ACSE timeout" in line]
    assert 1 <= len(closed) <= 5 + 5, closed
    ok, _, err = _echo(node, MODALITY)
    assert ok, err
    assert _store(node) == [0] * len(FILES)
    _nothing_lost(node, tmp_path / "back")


def test_a_known_modality_works_at_once_during_a_pdata_flood(make_node, tmp_path) -> None:
    pdu = 15.0
    node = _node(make_node, pdu_timeout=pdu, acse_timeout=60)
    flood_started = time.monotonic()
    with _flood(node, 40, HUGE_PDATA) as socks:
        # Those past the general slots (24 of 32) are closed at once.
        wait_for(lambda: sum(_closed(s) for s in socks) == 16, timeout=10)
        ok, took, err = _echo(node, MODALITY)
        assert ok, err
        assert _store(node) == [0] * len(FILES)
        # "At once": while every other slot is still held by the flood.
        assert time.monotonic() - flood_started < pdu, took
        assert sum(not _closed(s) for s in socks) == 24
        wait_for(lambda: all(_closed(s) for s in socks), timeout=pdu + 15)
        assert time.monotonic() - flood_started >= pdu * 0.9  # by the PDU timeout
    _nothing_lost(node, tmp_path / "back")
    assert "refused" in node.log()
    # Throttled: one row per address and reason, not one per refused connection.
    wait_for(lambda: bool(_refusal_rows(node)), timeout=20)
    assert len(_refusal_rows(node)) <= 10


def _refusal_rows(node: NodeProcess) -> list[dict]:
    return [r for r in audit_rows(node) if "DICOM connection refused" in r["detail"]]


def test_per_address_limit(make_node) -> None:
    node = _node(make_node, max_associations_per_address=4, acse_timeout=60)
    with _flood(node, 5, b"", sources=("127.0.0.2",)) as socks:
        wait_for(lambda: _closed(socks[4]), timeout=10)
        assert not any(_closed(s) for s in socks[:4])
        with _flood(node, 1, b"", sources=("127.0.0.3",)) as other:
            assert not _closed(other[0])
    ok, _, err = _echo(node, MODALITY)
    assert ok, err


def test_unknown_aes_cannot_take_the_reserve(make_node, tmp_path) -> None:
    node = _node(make_node, max_associations=12, reserved_associations=4,
                 max_associations_per_address=4, acse_timeout=60, pdu_timeout=600)
    with _flood(node, 8, PARTIAL_REQUEST) as socks:
        wait_for(lambda: sum(not _closed(s) for s in socks) == 8, timeout=10)
        # General slots full: 127.0.0.1 is a known modality's host, so it gets a reserved
        # slot, but its request names an unknown AE: rejected.
        ok, _, err = _echo(node, "STRANGER")
        assert not ok
        assert "Rejected" in err or "rejected" in err or "Local limit" in err, err
        # The known modality still gets in, again and again: the reserve was not taken.
        for _ in range(2):
            ok, _, err = _echo(node, MODALITY)
            assert ok, err
        assert _store(node) == [0] * len(FILES)
    _nothing_lost(node, tmp_path / "back")
    assert "only known AEs may use the reserved association slots" in node.log()


def test_over_tls_partial_requests_and_pdus_are_closed_too(make_node, tmp_path) -> None:
    acse, pdu = 4.0, 3.0
    node: NodeProcess = make_node(aet="PACS", extra_args=("--dicom-tls",),
                                  env=_env(acse_timeout=acse, pdu_timeout=pdu)).start()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    start = time.monotonic()
    socks = []
    try:
        for first in (PARTIAL_REQUEST, HUGE_PDATA, b""):
            raw = socket.create_connection(("127.0.0.1", node.dicom_port), timeout=10)
            sock = context.wrap_socket(raw)
            if first:
                sock.sendall(first)
            socks.append(sock)

        def closed(sock: ssl.SSLSocket) -> bool:
            sock.settimeout(0.2)
            try:
                return sock.recv(65536) == b""
            except TimeoutError:
                return False
            except (OSError, ssl.SSLError):
                return True

        wait_for(lambda: all(closed(s) for s in socks), timeout=acse + 15)
        assert time.monotonic() - start >= min(acse, pdu) * 0.8
    finally:
        for sock in socks:
            sock.close()
    # The port still serves; nothing was stored by the flood, and what is sent now is kept.
    assert node.status()["instances"] == 0
    echo = dcmtk("echoscu", *tls_args(node), "-aec", node.aet, *node.address)
    assert echo.returncode == 0, echo.stderr
