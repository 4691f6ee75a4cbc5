"""Control characters from the network never reach a log line verbatim (issue 21): an AE
title and an HTTP path carrying a newline and an escape sequence, sent to a real node."""

from __future__ import annotations

import logging
import socket
import struct
import subprocess

from node.log_format import SafeFormatter, escape_controls
from tests.mesh_support import start_founder, wait_for
from tests.support import NodeProcess

EVIL_AET = b"EVIL\nFAKE\x1b[31m"  # 14 bytes: a fake log line, in red


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _associate_rq(called: bytes, calling: bytes) -> bytes:
    """An A-ASSOCIATE-RQ (PS3.8 9.3.2) built by hand: pynetdicom would refuse the title."""
    context = bytes([1, 0, 0, 0]) + _item(0x30, b"1.2.840.10008.1.1") + _item(
        0x40, b"1.2.840.10008.1.2")
    body = (struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, context)
            + _item(0x50, _item(0x51, struct.pack(">I", 16384))))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def _lines_from(node: NodeProcess, after: int) -> list[str]:
    return node.log()[after:].splitlines()


def test_escape_controls_covers_c0_del_c1_and_separators() -> None:
    assert escape_controls("a\nb\rc\td\x00e\x1bf\x7fg\x85h\x9bi\u2028j\u2029k") == (
        "a\\nb\\rc\\td\\x00e\\x1bf\\x7fg\\x85h\\x9bi\\u2028j\\u2029k")
    assert escape_controls("Müller ^ 東京 \\n") == "Müller ^ 東京 \\n"
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "from %s", ("A\nB",), None)
    try:
        raise ValueError("bad\nFAKE line")
    except ValueError as exc:
        record.exc_info = (ValueError, exc, exc.__traceback__)
    text = SafeFormatter("%(levelname)s %(message)s").format(record)
    first, *rest = text.split("\n")
    assert first == "WARNING from A\\nB"
    assert rest and all(line.startswith("| ") for line in rest)
    # A traceback keeps its lines, each marked: none can pass for a record of its own.
    assert rest[-2:] == ["| ValueError: bad", "| FAKE line"]


def test_a_node_escapes_an_aet_and_a_path_from_the_network(make_node) -> None:
    node = start_founder(make_node, extra_args=("--access", "strict"), allowed_aets=("STORESCU",))
    start = len(node.log())
    with socket.create_connection(("127.0.0.1", node.dicom_port), timeout=10) as sock:
        sock.sendall(_associate_rq(b"NODEA", EVIL_AET))
        assert sock.recv(1)[0] in (0x03, 0x07)  # A-ASSOCIATE-RJ, or A-ABORT
    wait_for(lambda: "Invalid 'Calling AE Title'" in node.log()[start:])
    # A TLS client without a certificate, asking the mesh API for a path with the same.
    curl = subprocess.run(
        ["curl", "-gsk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
         f"https://127.0.0.1:{node.mesh_port}/x%0AFAKE%1B[31m"],
        capture_output=True, text=True, timeout=30)
    assert curl.stdout == "403"
    wait_for(lambda: "mesh API refused" in node.log()[start:])
    lines = _lines_from(node, start)
    assert "'EVIL\\nFAKE\\x1b[31m'" in "\n".join(lines)
    assert "mesh API refused /x\\nFAKE\\x1b[31m from 127.0.0.1" in "\n".join(lines)
    assert not [line for line in lines if line.startswith("FAKE")]
    assert "\x1b" not in node.log()
    # Nothing lost: the stored instance is still there.
    assert node.status()["instances"] == 1
