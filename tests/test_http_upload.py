"""POST /api/instances takes the whole body or nothing (issue 21, defect 1): a large real
image sent with curl is stored whole and comes back bit-exact; a body cut off early, one
over the limit, or one that is not DICOM leaves nothing behind (no object, no row, no
temporary file, nothing under conflicts/)."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tests.support import (
    NodeProcess,
    data_store_dir,
    dataset_bytes,
    getscu_instance,
    sop_instance_uid,
)
from tests.test_audit import wait_for_rows

# The largest CT/MR of pydicom-data (2 MB) and its largest image of all (7 MB): both far
# beyond what aiohttp buffers (64 KiB), which is all the old handler read.
LARGE = ("MR2_UNCR.dcm", "RG1_UNCI.dcm")
SMALL_LIMIT = 300_000  # bytes: the node under test refuses bodies larger than this


def sample(name: str) -> Path:
    return data_store_dir() / name


def state(node: NodeProcess) -> dict[str, object]:
    """Everything an upload may leave: objects (by content), rows, temporaries, copies."""
    root = node.data_dir
    objects = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
               for p in (root / "objects").rglob("*.dcm")}
    return {
        "objects": objects,
        "tmp": sorted(p.name for p in (root / "tmp").iterdir()),
        "partial": sorted(p.name for p in (root / "partial").iterdir()),
        "conflicts": sorted(p.name for p in (root / "conflicts").iterdir()),
        "instances": node.status()["instances"],
    }


def curl_upload(node: NodeProcess, path: Path, *extra: str) -> tuple[int, str]:
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "--data-binary", f"@{path}",
         "-H", "Content-Type: application/dicom", *extra, "-w", "\n%{http_code}",
         f"http://127.0.0.1:{node.http_port}/api/instances"],
        capture_output=True, text=True, timeout=90)
    body, _, code = result.stdout.rpartition("\n")
    assert code.isdigit(), result.stderr
    return int(code), body


def stored_object(node: NodeProcess, sha: str) -> bytes:
    return (node.data_dir / "objects" / sha[:2] / f"{sha}.dcm").read_bytes()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    running = NodeProcess(data_dir=tmp_path / "node", aet="ARCHIVE",
                          extra_args=("--http-auth", "none", "--http-max-body",
                                      str(8 * 2**20))).start()
    yield running
    running.stop()


@pytest.fixture
def small_limit_node(tmp_path: Path) -> Iterator[NodeProcess]:
    running = NodeProcess(data_dir=tmp_path / "limited", aet="LIMITED",
                          extra_args=("--http-auth", "none", "--http-max-body",
                                      str(SMALL_LIMIT))).start()
    yield running
    running.stop()


@pytest.mark.parametrize("name", LARGE)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_upload_is_stored_whole(node: NodeProcess, tmp_path: Path, name: str,
                                      chunked: bool) -> None:
    path = sample(name)
    sent = path.read_bytes()
    sha = hashlib.sha256(sent).hexdigest()
    extra = ("-H", "Transfer-Encoding: chunked") if chunked else ()
    code, body = curl_upload(node, path, *extra)
    assert code == 200, body
    assert json.loads(body) == {"status": "stored", "SOPInstanceUID": sop_instance_uid(path)}
    after = state(node)
    assert after["objects"] == {f"{sha}.dcm": sha}
    assert (after["tmp"], after["partial"], after["conflicts"]) == ([], [], [])
    assert after["instances"] == 1
    assert stored_object(node, sha) == sent
    assert node.status()["bytes"] == len(sent)
    # And a DICOM client gets exactly the data set that was sent (getscu writes its own
    # file meta).
    got = getscu_instance(node, tmp_path / "got", sop_instance_uid(path))
    assert dataset_bytes(got) == dataset_bytes(path)


def raw_request(node: NodeProcess, head: bytes, body: bytes, half_close: bool) -> bytes:
    """Send ``head`` and ``body``, then close (or half-close and read the answer)."""
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=30) as sock:
        sock.sendall(head + body)
        if not half_close:
            return b""
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def upload_head(node: NodeProcess, length: int) -> bytes:
    return (f"POST /api/instances HTTP/1.1\r\nHost: 127.0.0.1:{node.http_port}\r\n"
            f"Content-Type: application/dicom\r\nContent-Length: {length}\r\n\r\n").encode()


def wait_until(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.parametrize("half_close", [False, True], ids=["closed", "half-closed"])
def test_body_cut_off_early_stores_nothing(node: NodeProcess, half_close: bool) -> None:
    path = sample(LARGE[1])
    sent = path.read_bytes()
    before = state(node)
    answer = raw_request(node, upload_head(node, len(sent)), sent[: len(sent) // 3],
                         half_close)
    if answer:  # the connection may be gone before anything can be answered
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    rows = wait_for_rows(node, lambda rs: any("body ended" in r["detail"] for r in rs))
    refusal = [r for r in rows if "body ended" in r["detail"]]
    assert refusal and refusal[0]["outcome"] == "refused", rows
    wait_until(lambda: state(node) == before)
    # The node still takes the same file whole afterwards.
    code, body = curl_upload(node, path)
    assert code == 200, body
    sha = hashlib.sha256(sent).hexdigest()
    assert stored_object(node, sha) == sent
    assert state(node)["objects"] == {f"{sha}.dcm": sha}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(small_limit_node: NodeProcess, chunked: bool) -> None:
    node = small_limit_node
    path = sample(LARGE[0])  # 2 MB, over the 300 kB limit
    before = state(node)
    extra = ("-H", "Transfer-Encoding: chunked") if chunked else ()
    code, body = curl_upload(node, path, *extra)
    assert code == 413, body
    assert f"limit of {SMALL_LIMIT} bytes" in body and body.count("\n") <= 1
    rows = wait_for_rows(node, lambda rs: any("limit of" in r["detail"] for r in rs))
    assert any(r["action"] == "refusal" and "limit of" in r["detail"] for r in rows)
    assert state(node) == before
    # Under the limit it is still taken, whole.
    small = Path(get_testdata_file("CT_small.dcm"))
    code, body = curl_upload(node, small)
    assert code == 200, body
    sha = hashlib.sha256(small.read_bytes()).hexdigest()
    assert stored_object(node, sha) == small.read_bytes()
    assert state(node)["objects"] == {f"{sha}.dcm": sha}


def test_not_dicom_is_400_and_nothing_kept(node: NodeProcess, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 200_000)
    before = state(node)
    code, body = curl_upload(node, junk)
    assert code == 400 and body.startswith("not a storable DICOM file"), body
    assert state(node) == before


def test_upload_is_sealed_at_rest_as_it_streams(tmp_path: Path) -> None:
    node = NodeProcess(data_dir=tmp_path / "sealed", aet="SEALED",
                       extra_args=("--http-auth", "none", "--encrypt-at-rest")).start()
    try:
        path = sample(LARGE[1])
        sent = path.read_bytes()
        sha = hashlib.sha256(sent).hexdigest()
        # A cut-off body leaves nothing, sealed or not.
        before = state(node)
        raw_request(node, upload_head(node, len(sent)), sent[:2 * 2**20], False)
        wait_for_rows(node, lambda rs: any("body ended" in r["detail"] for r in rs))
        wait_until(lambda: state(node) == before)
        code, body = curl_upload(node, path, "-H", "Transfer-Encoding: chunked")
        assert code == 200, body
        on_disk = stored_object(node, sha)
        assert on_disk != sent and sent[128:4096] not in on_disk  # no plaintext on disk
        after = state(node)
        assert (after["tmp"], after["partial"], after["conflicts"]) == ([], [], [])
        assert after["instances"] == 1 and node.status()["bytes"] == len(sent)
        got = getscu_instance(node, tmp_path / "got", sop_instance_uid(path))
        assert dataset_bytes(got) == dataset_bytes(path)
    finally:
        node.stop()
