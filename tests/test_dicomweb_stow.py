"""STOW-RS (issue 15) against a real node process: the real images of pydicom-data stored
through the same ingest as C-STORE and retrieved bit-exact, dicomweb-client's own STOW,
200/202/409 with Referenced and Failed SOP Sequences, 415 for a wrong Content-Type, and a
malformed or cut-off multipart body answered 400 with nothing stored."""

from __future__ import annotations

import hashlib
import io
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom import dcmread

from tests.support import NodeProcess, one_file_per_instance
from tests.test_audit import wait_for_rows
from tests.test_dicomweb_qido import header, sample
from tests.test_http_tokens import add_token
from tests.test_http_upload import raw_request, wait_until

DICOM_JSON = "application/dicom+json"
STUDY_UID, SOP_UID, FAILURE_REASON = "0020000D", "00081155", "00081197"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    running = NodeProcess(data_dir=tmp_path_factory.mktemp("stow") / "node").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def uploader(node: NodeProcess) -> str:
    return add_token(node, "uploader")


@pytest.fixture(scope="module")
def reader(node: NodeProcess) -> str:
    return add_token(node, "reader")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def url(node: NodeProcess, path: str = "/studies") -> str:
    return f"http://127.0.0.1:{node.http_port}/dicom-web{path}"


def multipart(parts: list[bytes], boundary: str, part_type: str = "application/dicom") -> bytes:
    body = b"".join(b"--%s\r\nContent-Type: %s\r\n\r\n%s\r\n"
                    % (boundary.encode(), part_type.encode(), p) for p in parts)
    return body + b"--%s--\r\n" % boundary.encode()


def stow(node: NodeProcess, token: str, parts: list[bytes], path: str = "/studies",
         body: bytes | None = None, content_type: str | None = None) -> requests.Response:
    boundary = secrets.token_hex(12)
    return requests.post(
        url(node, path), data=multipart(parts, boundary) if body is None else body,
        headers={**bearer(token), "Content-Type": content_type
                 or f'multipart/related; type="application/dicom"; boundary={boundary}'},
        timeout=120)


def left_behind(node: NodeProcess) -> tuple[list[str], list[str]]:
    """Objects stored, and temporary files under the data dir."""
    def names(folder: str) -> list[str]:
        return sorted(p.name for p in (node.data_dir / folder).rglob("*") if p.is_file())
    return names("objects"), names("tmp")


def retrieved(node: NodeProcess, token: str, retrieve_url: str) -> bytes:
    client = DICOMwebClient(url=url(node, ""))
    response = requests.get(f"http://127.0.0.1:{node.http_port}{retrieve_url}",
                            headers={"Accept": 'multipart/related; type="application/dicom"',
                                     **bearer(token)}, timeout=30)
    assert response.status_code == 200, response.text
    [part] = client._decode_multipart_message(response, stream=False)
    return bytes(part)


def test_real_images_stored_and_retrieved_bit_exact(node: NodeProcess, uploader: str,
                                                    reader: str) -> None:
    files = one_file_per_instance(dcmtk_only=False)
    response = stow(node, uploader, [f.read_bytes() for f in files])
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == DICOM_JSON
    answer = response.json()
    assert "00081198" not in answer  # no FailedSOPSequence
    refs = answer["00081199"]["Value"]
    by_uid = {r[SOP_UID]["Value"][0]: r["00081190"]["Value"][0] for r in refs}
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert retrieved(node, reader, by_uid[uid]) == path.read_bytes(), path.name


def test_dicomweb_client_stow_then_search(node: NodeProcess, uploader: str,
                                          reader: str) -> None:
    client = DICOMwebClient(url=url(node, ""), headers=bearer(uploader))
    searcher = DICOMwebClient(url=url(node, ""), headers=bearer(reader))
    ds = dcmread(sample("MR_small.dcm"))
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1515151"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    answer = client.store_instances([ds])
    assert answer.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    found = searcher.search_for_instances(search_filters={"SOPInstanceUID": ds.SOPInstanceUID})
    assert len(found) == 1
    stored = retrieved(node, reader, answer.ReferencedSOPSequence[0].RetrieveURL)
    assert hashlib.sha256(stored).hexdigest() in {
        p.name.split(".")[0] for p in (node.data_dir / "objects").rglob("*") if p.is_file()}


def test_partial_and_failed_stores(node: NodeProcess, uploader: str) -> None:
    ct = sample("CT_small.dcm").read_bytes()
    garbage = b"not DICOM at all" * 100
    partial = stow(node, uploader, [ct, garbage])
    assert partial.status_code == 202, partial.text
    assert partial.headers["Content-Type"] == DICOM_JSON
    assert partial.json()["00081198"]["Value"][0][FAILURE_REASON]["Value"] == [0xC000]
    # Another study's instance posted under a study: refused, nothing stored.
    mr = header("MR_small.dcm")
    before = left_behind(node)
    mismatch = stow(node, uploader, [ct], path=f"/studies/{mr.StudyInstanceUID}")
    assert mismatch.status_code == 409
    assert mismatch.json()["00081198"]["Value"][0][FAILURE_REASON]["Value"] == [0xA900]
    # The same SOP Instance UID with other bytes: a conflict, the first copy kept.
    altered = dcmread(sample("CT_small.dcm"))
    altered.StudyDescription = "altered"
    buffer = io.BytesIO()
    altered.save_as(buffer, enforce_file_format=True)
    conflict = stow(node, uploader, [buffer.getvalue()])
    assert conflict.status_code == 409
    assert conflict.json()["00081198"]["Value"][0][FAILURE_REASON]["Value"] == [0x0111]
    assert left_behind(node) == before


@pytest.mark.parametrize("content_type", [
    "application/dicom", 'multipart/related; type="application/dicom+xml"; boundary=x',
    "text/plain", None])
def test_wrong_content_type_is_415(node: NodeProcess, uploader: str,
                                   content_type: str | None) -> None:
    before = left_behind(node)
    headers = bearer(uploader)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = requests.post(url(node), data=sample("CT_small.dcm").read_bytes(),
                             headers=headers, timeout=30)
    assert response.status_code == 415
    assert "multipart/related" in response.text
    assert left_behind(node) == before


def test_malformed_multipart_stores_nothing(node: NodeProcess, uploader: str) -> None:
    image = sample("SC_rgb_rle.dcm").read_bytes()
    boundary = "b0undary"
    whole = multipart([image, sample("emri_small.dcm").read_bytes()], boundary)
    cases = {
        "cut off": whole[: len(whole) // 2],
        "no closing delimiter": whole[: whole.rindex(b"--b0undary--")],
        "other boundary": multipart([image], "elsewhere"),
        "no blank line after headers": b"--b0undary\r\nContent-Type: application/dicom\r\n"
                                       + image + b"\r\n--b0undary--\r\n",
    }
    before = left_behind(node)
    for name, body in cases.items():
        response = stow(node, uploader, [], body=body, content_type=(
            f'multipart/related; type="application/dicom"; boundary={boundary}'))
        assert response.status_code == 400, name
        assert "multipart" in response.text, name
        assert left_behind(node) == before, name
    no_boundary = stow(node, uploader, [], body=whole,
                       content_type='multipart/related; type="application/dicom"')
    assert no_boundary.status_code == 400


def test_roles_and_audit(node: NodeProcess, uploader: str, reader: str) -> None:
    assert stow(node, reader, [sample("CT_small.dcm").read_bytes()]).status_code == 403
    assert requests.post(url(node), data=b"", timeout=10).status_code == 401
    ct = header("CT_small.dcm")
    searcher = DICOMwebClient(url=url(node, ""), headers=bearer(reader))
    assert searcher.search_for_studies(search_filters={"PatientID": "1CT1"})
    assert searcher.retrieve_study_metadata(str(ct.StudyInstanceUID))
    admin = add_token(node, "admin")
    rows = requests.get(f"http://127.0.0.1:{node.http_port}/api/audit",
                        headers=bearer(admin), timeout=10).json()
    assert any(r["action"] == "store" and "STOW-RS" in r["detail"] for r in rows)
    assert any(r["action"] == "query" and "DICOMweb" in r["detail"]
               and r["patient_id"] == "1CT1" for r in rows)
    assert any(r["action"] == "retrieve" and "metadata" in r["detail"]
               and r["study_uid"] == str(ct.StudyInstanceUID) for r in rows)


@pytest.mark.parametrize("half_close", [False, True], ids=["closed", "half-closed"])
def test_body_cut_off_stores_nothing(node: NodeProcess, uploader: str,
                                     half_close: bool) -> None:
    boundary = "cutoff"
    whole = multipart([sample("MR_small.dcm").read_bytes(),
                       sample("emri_small.dcm").read_bytes()], boundary)
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1:{node.http_port}\r\n"
            f"Authorization: Bearer {uploader}\r\nContent-Length: {len(whole)}\r\n"
            f'Content-Type: multipart/related; type="application/dicom"; boundary={boundary}'
            "\r\n\r\n").encode()
    before = left_behind(node)
    answer = raw_request(node, head, whole[: len(whole) // 3], half_close)
    if answer:  # the connection may be gone before anything can be answered
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    wait_until(lambda: left_behind(node) == before)
    rows = wait_for_rows(node, lambda rs: any("body ended" in r["detail"] for r in rs))
    assert any("body ended" in r["detail"] and "dicom-web" in r["detail"] for r in rows)


def test_sealed_at_rest_stored_and_retrieved_bit_exact(tmp_path: Path) -> None:
    sealed = NodeProcess(data_dir=tmp_path / "sealed",
                         extra_args=("--http-auth", "none", "--encrypt-at-rest")).start()
    try:
        files = [sample(n) for n in ("MR_small.dcm", "emri_small.dcm", "JPEG2000.dcm")]
        response = stow(sealed, "", [f.read_bytes() for f in files])
        assert response.status_code == 200, response.text
        urls = [r["00081190"]["Value"][0] for r in response.json()["00081199"]["Value"]]
        for path, retrieve_url in zip(files, urls, strict=True):
            sent = path.read_bytes()
            [stored] = [p for p in (sealed.data_dir / "objects").rglob("*")
                        if p.name.startswith(hashlib.sha256(sent).hexdigest())]
            assert stored.read_bytes() != sent  # sealed on disk
            assert retrieved(sealed, "", retrieve_url) == sent
    finally:
        sealed.stop()


def test_a_2_gb_upload_cut_off_stores_nothing(tmp_path: Path) -> None:
    """A 2 GB STOW-RS body (declared, within a 4 GiB limit) cut off after 64 MiB: nothing
    stored, nothing left in tmp/, and the node still takes the next STOW; over the default
    1 GiB limit, the same request is refused before its body is read."""
    big = NodeProcess(data_dir=tmp_path / "node",
                      extra_args=("--http-max-body", str(4 * 2**30))).start()
    try:
        token = add_token(big, "uploader")
        boundary = "twogigabytes"
        opening = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
        head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1:{big.http_port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {2 * 10**9}\r\n"
                f'Content-Type: multipart/related; type="application/dicom"; '
                f"boundary={boundary}\r\n\r\n").encode()
        before = left_behind(big)
        raw_request(big, head, opening + b"\0" * (64 * 2**20), half_close=False)
        wait_until(lambda: left_behind(big) == before, timeout=60)
        rows = wait_for_rows(big, lambda rs: any("body ended" in r["detail"] for r in rs))
        assert any("dicom-web" in r["detail"] for r in rows if "body ended" in r["detail"])
        assert stow(big, token, [sample("MR_small.dcm").read_bytes()]).status_code == 200
    finally:
        big.stop()


def test_a_2_gb_upload_over_the_limit_is_refused_at_once(node: NodeProcess,
                                                         uploader: str) -> None:
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1:{node.http_port}\r\n"
            f"Authorization: Bearer {uploader}\r\nContent-Length: {2 * 10**9}\r\n"
            'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
            "\r\n").encode()
    before = left_behind(node)
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=30) as sock:
        sock.sendall(head + b"--b\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # the node closes after its answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"limit of" in answer
    assert left_behind(node) == before
