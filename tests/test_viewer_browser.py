"""OHIF in headless Chromium (issue 15): two real nodes in a mesh; A holds the studies (a
multi-slice CT series, a JPEG 2000 and a JPEG-LS one from pydicom-data) and only A (one
replica, A its owner); B got the viewer from A over the mesh and serves it. A browser logs in
to B, opens each study at /viewer?StudyInstanceUIDs=..., and the viewport shows the images
B fetched from A; ArrowDown steps through the CT's slices."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from replication.placement import owners
from tests.mesh_support import (
    cli,
    invite,
    joiner,
    mesh_view,
    peer_states,
    start_founder,
    wait_for,
)
from tests.support import NodeProcess, storescu
from tests.viewer_support import CHROMIUM_ARGS, chromium, ohif_tarball

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
VIEWPORT = "canvas.cornerstone-canvas"
SLICES = 12


def owned_by(node_id: str, ids: list[str]) -> str:
    study = generate_uid()
    while owners(study, ids, 1) != [node_id]:
        study = generate_uid()
    return study


def ct_series(directory: Path, study: str) -> list[Path]:
    """SLICES CT images whose content differs from slice to slice (a disc that grows)."""
    directory.mkdir(parents=True, exist_ok=True)
    template = dcmread(get_testdata_file("CT_small.dcm"))
    series, side = generate_uid(), 128
    yy, xx = np.mgrid[0:side, 0:side]
    paths = []
    for n in range(SLICES):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.InstanceNumber, ds.SeriesNumber = n + 1, 1
        ds.ImagePositionPatient = [0.0, 0.0, float(n * 5)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceLocation, ds.SliceThickness = float(n * 5), 5.0
        ds.Rows = ds.Columns = side
        ds.PixelRepresentation, ds.RescaleIntercept, ds.RescaleSlope = 1, 0, 1
        ds.WindowCenter, ds.WindowWidth = 500, 1000
        disc = (xx - side / 2) ** 2 + (yy - side / 2) ** 2 < (8 + 4 * n) ** 2
        ds.PixelData = np.where(disc, 1000, (xx * 4) % 400).astype(np.int16).tobytes()
        path = directory / f"{n:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def restudied(name: str, study: str, out: Path) -> Path:
    """A pydicom-data file moved into ``study`` (its encapsulated pixel data untouched)."""
    ds = dcmread(get_testdata_file(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def lit_pixels(png: bytes) -> int:
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    return int((grey > 16).sum())


def pacsmesh(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ohif_on_b_opens_studies_only_a_holds(make_node, tmp_path: Path) -> None:
    executable, tarball = chromium(), ohif_tarball()
    from playwright.sync_api import sync_playwright

    a = start_founder(make_node, extra_args=("--replicas", "1"))
    pacsmesh("viewer", "install", "--data-dir", str(a.data_dir), "--from", str(tarball))
    b: NodeProcess = joiner(make_node, a, "nodeb", invite(a))
    b.extra_args += ("--replicas", "1")
    b.start()
    wait_for(lambda: all(len(mesh_view(n)["members"]) == 2 for n in (a, b)), 30)
    wait_for(lambda: set(peer_states(b).values()) == {"alive"}, 30)
    started = time.monotonic()
    print(pacsmesh("viewer", "install", "--data-dir", str(b.data_dir),
                   "--member", f"127.0.0.1:{a.mesh_port}").strip(),
          f"(member install: {time.monotonic() - started:.1f} s)")

    ids = [mesh_view(a)["node_id"], mesh_view(b)["node_id"]]
    studies = {label: owned_by(ids[0], ids) for label in ("ct", "j2k", "jls")}
    files = [*ct_series(tmp_path / "ct", studies["ct"]),
             restudied("emri_small_jpeg_2k_lossless.dcm", studies["j2k"], tmp_path / "j2k.dcm"),
             restudied("emri_small_jpeg_ls_lossless.dcm", studies["jls"], tmp_path / "jls.dcm")]
    assert storescu(a, files) == []

    def known_on_b() -> bool:
        try:
            return all(any(h["node_id"] == ids[0] for h in b.get_json(f"/api/studies/{s}")
                           ["holders"]) for s in studies.values())
        except OSError:  # 404 until B's catalog has it
            return False
    wait_for(known_on_b, 60)
    held_on_b = {row["StudyInstanceUID"] for row in b.get_json("/api/studies")}
    assert not held_on_b & set(studies.values())  # B's own index has none of them
    token = cli("token", "add", "--data-dir", str(b.data_dir), "--role", "reader",
                "--name", "browser").stdout.strip().splitlines()[-1]

    answers: list[tuple[int, str]] = []
    failed: list[str] = []
    base = f"http://127.0.0.1:{b.http_port}"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("response", lambda r: answers.append((r.status, r.url))
                    if "/dicom-web" in r.url or "/wado" in r.url else None)
            # The viewer itself cancels loads it no longer needs (net::ERR_ABORTED, e.g.
            # a slice scrolled past): not an answer. A reset or a cut stream is a failure.
            page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}")
                    if ("/dicom-web" in r.url or "/wado" in r.url)
                    and r.failure != "net::ERR_ABORTED" else None)

            page.goto(f"{base}/viewer?StudyInstanceUIDs={studies['ct']}")
            page.wait_for_url("**/login?**")  # tokens exist on B: the viewer asks for one
            page.fill("input[name=token]", token)
            started = time.monotonic()
            page.click("input[type=submit]")
            for label, study in studies.items():
                if label != "ct":
                    # The last study's prefetch ends first: a navigation would abort it.
                    page.wait_for_load_state("networkidle")
                    started = time.monotonic()
                    page.goto(f"{base}/viewer?StudyInstanceUIDs={study}")
                viewport = page.locator(VIEWPORT).first
                viewport.wait_for(timeout=120_000)
                deadline = time.monotonic() + 120
                while lit_pixels(viewport.screenshot()) < 200:
                    assert time.monotonic() < deadline, f"{label}: the viewport stayed blank"
                    time.sleep(0.5)
                print(f"{label}: first image in {time.monotonic() - started:.1f} s")
                page.screenshot(path=str(ARTIFACTS / f"viewer-{label}.png"))
                skip_tour = page.get_by_text("Skip all")  # OHIF's first-visit tour
                if skip_tour.is_visible():
                    skip_tour.click()
                if label == "ct":
                    before = viewport.screenshot()
                    viewport.click()
                    for _ in range(3):
                        page.keyboard.press("ArrowDown")
                    wait_for(lambda v=viewport, b0=before: v.screenshot() != b0, 30)
                    page.screenshot(path=str(ARTIFACTS / "viewer-ct-slice4.png"))
            page.wait_for_load_state("networkidle")
            print(f"screenshots in {ARTIFACTS}")
        finally:
            browser.close()
    bad = [(status, url) for status, url in answers if not 200 <= status < 300]
    assert answers and not bad and not failed, (bad, failed)
    assert any("/frames/" in url for _, url in answers)


pytestmark = pytest.mark.timeout(900)
