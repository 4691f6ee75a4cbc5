"""The viewer on a running node's HTTP port (issue 15): a clear page until one is installed,
then OHIF's files with their types and cache headers, unknown paths falling back to its
index.html, and the node's own paths never shadowed."""

from __future__ import annotations

import gzip
from pathlib import Path

import requests

from node.viewer_bundle import install, integrity_of
from tests.test_viewer_install import INDEX, tarball

BUNDLE = b"var viewer = 'bundle';\n" * 400
WASM = b"\x00asm\x01\x00\x00\x00" + bytes(2000)


def stand_in(path: Path) -> Path:
    return tarball(path, {
        "package/dist/index.html": INDEX,
        "package/dist/app.bundle.0f6159c501addfe9.js": BUNDLE,
        "package/dist/5130ccb17e3f3f5b.wasm": WASM,
        "package/dist/sw.js": b"self.x = 1;",
        "package/dist/app-config.js": b"window.config = {demo: 'aws'};",
    })


def test_no_viewer_then_the_viewer_with_the_node_paths_kept(node, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{node.http_port}"
    for path in ("/", "/viewer?StudyInstanceUIDs=1.2.3"):
        page = requests.get(base + path, timeout=10)
        assert page.status_code == 404 and "pacsmesh viewer install" in page.text
        assert page.headers["Content-Type"].startswith("text/html")

    viewer = stand_in(tmp_path / "viewer.tgz")
    install(node.data_dir, viewer, "test", integrity=integrity_of(viewer))  # no restart
    for path in ("/", "/viewer?StudyInstanceUIDs=1.2.3", "/viewer/dicomweb", "/local"):
        page = requests.get(base + path, timeout=10)
        assert page.status_code == 200, path
        assert page.content == INDEX and page.headers["Cache-Control"] == "no-cache"

    config = requests.get(base + "/app-config.js", timeout=10)
    assert config.status_code == 200
    assert config.headers["Content-Type"].startswith("text/javascript")
    text = config.text  # the node's own, not the one in dist/
    assert "aws" not in text and "qidoRoot: root + '/dicom-web'" in text
    for setting in ("wadoUriRoot: root + '/wado'", "imageRendering: 'wadors'",
                    "thumbnailRendering:", "supportsFuzzyMatching: true",
                    "enableStudyLazyLoad: true", "window.location.origin"):
        assert setting in text

    bundle = requests.get(base + "/app.bundle.0f6159c501addfe9.js", timeout=10,
                          headers={"Accept-Encoding": "gzip"}, stream=True)
    assert bundle.headers["Content-Type"].startswith("text/javascript")
    assert bundle.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert bundle.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(bundle.raw.read()) == BUNDLE
    wasm = requests.get(base + "/5130ccb17e3f3f5b.wasm", timeout=10)
    assert wasm.headers["Content-Type"] == "application/wasm" and wasm.content == WASM
    assert requests.get(base + "/sw.js", timeout=10).headers["Cache-Control"] == "no-cache"

    assert requests.get(base + "/missing.bundle.js", timeout=10).status_code == 404
    for sneaky in ("/..%2f..%2f..%2fetc/passwd", "/%2e%2e/%2e%2e/index.sqlite",
                   "/static/../../index.sqlite"):
        answer = requests.get(base + sneaky, timeout=10)
        assert b"root:" not in answer.content and b"SQLite" not in answer.content

    # The node's own paths: answered by the node, or a 404 that is not the viewer's page.
    assert requests.get(base + "/api/status", timeout=10).json()["aet"] == node.aet
    studies = requests.get(base + "/dicom-web/studies", timeout=10)
    assert studies.status_code in (200, 204)
    for own in ("/dashboard", "/metrics"):  # the node's pages, never the viewer's
        answer = requests.get(base + own, timeout=10)
        assert answer.status_code in (200, 401) and answer.content != INDEX, own
    for own in ("/api/nothing", "/dicom-web/nothing", "/wado/x", "/dashboard/nothing",
                "/metrics/x", "/install", "/mesh/x", "/api"):
        answer = requests.get(base + own, timeout=10)
        assert answer.status_code == 404, own
        assert answer.content != INDEX and "html" not in answer.headers["Content-Type"]
    assert requests.get(base + "/api/nothing", timeout=10).json()["error"]
