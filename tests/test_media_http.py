"""Portable media through a running node: GET /api/studies/{uid}/media streams a zip or an
ISO image (reader), POST /api/media and ``pacsmesh import --to-node`` take media in
(uploader), ``pacsmesh export`` goes through the node that holds the data dir, and a
study only other members hold is fetched over the mesh first."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pycdlib
import pytest
from pydicom import dcmread

from node.http.auth import UPLOAD, required_role
from tests.media_support import STUDIES, cli, files_under, filled_data_dir, study_files
from tests.support import NodeProcess
from tests.test_audit import wait_for_rows
from tests.test_mesh_retrieve import form_mesh, study_on_b_and_c


def get(node: NodeProcess, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}{path}",
                                    timeout=120) as rsp:
            return rsp.status, rsp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post(node: NodeProcess, body: bytes, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.http_port}/api/media", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as rsp:
            return rsp.status, rsp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def token(tmp_path: Path, data_dir: Path, role: str) -> str:
    made = cli(tmp_path, "token", "add", "--data-dir", str(data_dir), "--role", role)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def instances_in_zip(data: bytes) -> set[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        names = [n for n in zf.namelist() if n not in ("DICOMDIR", "README.TXT", "INDEX.HTM")]
        return {str(dcmread(io.BytesIO(zf.read(n)), stop_before_pixels=True).SOPInstanceUID)
                for n in names}


def instances_in_iso(source: Path | io.BytesIO) -> list[str]:
    iso = pycdlib.PyCdlib()
    if isinstance(source, Path):
        iso.open(str(source))
    else:
        iso.open_fp(source)
    try:
        names = [f"{d.rstrip('/')}/{f}" for d, _, fs in iso.walk(iso_path="/") for f in fs]
    finally:
        iso.close()
    return [n for n in names if n not in ("/DICOMDIR.;1", "/README.TXT;1", "/INDEX.HTM;1")]


def test_upload_to_media_needs_the_uploader_role() -> None:
    assert required_role("POST", "/api/media") == UPLOAD


@pytest.fixture
def source(tmp_path: Path, make_node) -> NodeProcess:
    node = make_node("source")
    node.data_dir = filled_data_dir(tmp_path)
    return node.start()


def test_a_study_as_zip_and_iso_and_back_into_another_node(
        source: NodeProcess, make_node, tmp_path: Path) -> None:
    uid = STUDIES[2]
    expected = {k for k, p in study_files().items()
                if str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) == uid}
    status, medium = get(source, f"/api/studies/{uid}/media?format=zip")
    assert status == 200, medium
    assert instances_in_zip(medium) == expected
    status, image = get(source, f"/api/studies/{uid}/media?format=iso")
    assert status == 200, image
    assert len(instances_in_iso(io.BytesIO(image))) == len(expected)
    rows = wait_for_rows(source, lambda r: len(r) >= 2, "--action", "export")
    assert {r["study_uid"] for r in rows} == {uid}
    assert {r["detail"] for r in rows} >= {f"portable media (zip): {len(expected)}"
                                           " instance(s)"}

    assert get(source, "/api/studies/1.2.3/media")[0] == 404
    status, why = get(source, f"/api/studies/{uid}/media?format=tar")
    assert status == 400 and b"zip or iso" in why

    target = make_node("target").start()
    uploader, reader = (token(tmp_path, target.data_dir, r) for r in ("uploader", "reader"))
    assert post(target, medium, reader)[0] == 403
    status, answer = post(target, medium, uploader)
    assert status == 200, answer
    counts = json.loads(answer)
    assert (counts["stored"], counts["duplicate"], counts["unreadable"],
            counts["missing"]) == (len(expected), 0, 0, 0)
    counts = json.loads(post(target, image, uploader)[1])
    assert (counts["stored"], counts["duplicate"]) == (0, len(expected))
    status, why = post(target, medium[: len(medium) // 2], uploader)
    assert status == 400 and b"not a whole zip archive" in why
    status, why = post(target, b"not a medium at all", uploader)
    assert status == 400 and b"neither a zip archive nor an ISO 9660 image" in why
    assert len(files_under(target.data_dir / "objects")) == len(expected)


def test_cli_export_and_import_through_running_nodes(
        source: NodeProcess, make_node, tmp_path: Path) -> None:
    dest = tmp_path / "out.iso"
    # The data dir is the running node's: the node makes the medium.
    result = cli(tmp_path, "export", "--data-dir", str(source.data_dir), "--study",
                 STUDIES[0], "--to", str(dest), "--http-port", str(source.http_port))
    assert result.returncode == 0, result.stderr
    assert "by the running node" in result.stdout
    target = make_node("target").start()
    sent = import_to(target, dest, token(tmp_path, target.data_dir, "uploader"))
    assert sent.returncode == 0, sent.stderr
    assert ", duplicate 0, conflict 0, unreadable 0, missing 0" in sent.stdout
    assert len(files_under(target.data_dir / "objects")) == len(instances_in_iso(dest))


def import_to(node: NodeProcess, medium: Path, bearer: str
              ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACSMESH_TOKEN": bearer}
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "import", "--to-node",
         f"http://127.0.0.1:{node.http_port}", str(medium)],
        capture_output=True, text=True, timeout=120, env=env)


def test_a_study_only_other_members_hold_is_fetched_for_the_medium(
        make_node, tmp_path: Path) -> None:
    nodes = form_mesh(make_node)
    a = nodes[0]
    study, files = study_on_b_and_c(nodes, tmp_path, 4)
    status, medium = get(a, f"/api/studies/{study}/media")
    assert status == 200, medium
    expected = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert instances_in_zip(medium) == expected
