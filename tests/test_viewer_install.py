"""``pacsmesh viewer install`` (issue 15): from a local npm tarball, from an npm registry,
from a mesh member; tarballs that are not the pinned package, or that reach outside
themselves, are refused with nothing installed and the viewer before left as it was."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from node.viewer_bundle import (
    CURRENT,
    INTEGRITY,
    VERSION,
    VIEWER_DIR,
    ViewerInstallError,
    install,
    installed,
    integrity_of,
)
from tests.mesh_support import cli, invite, joiner, mesh_view, start_founder, wait_for
from tests.viewer_support import ohif_tarball

INDEX = b"<!doctype html><title>OHIF stand-in</title><script src=/app-config.js></script>"


def tarball(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """An npm-shaped tarball: ``members`` are files, ``links`` symlinks (name -> target)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def small_viewer(path: Path) -> Path:
    return tarball(path, {"package/package.json": b"{}",
                          "package/dist/index.html": INDEX,
                          "package/dist/app.bundle.0f6159c501addfe9.js": b"var a = 1;\n" * 500})


def test_a_local_npm_tarball_installs_and_reinstalls_atomically(tmp_path: Path) -> None:
    source = ohif_tarball()
    data = tmp_path / "data"
    started = time.monotonic()
    result = cli("viewer", "install", "--data-dir", str(data), "--from", str(source))
    assert result.returncode == 0, result.stderr
    print(f"install from a local tarball: {time.monotonic() - started:.1f} s")
    first = installed(data)
    assert first is not None and first.version == VERSION and first.integrity == INTEGRITY
    assert (first.dist / "index.html").is_file() and first.archive.read_bytes() == \
        source.read_bytes()
    assert first.files > 200 and first.bytes > 100_000_000  # a built app, not the wheel's
    assert "app-config.js" in (first.dist / "index.html").read_text()
    status = cli("viewer", "status", "--data-dir", str(data))
    assert status.returncode == 0 and INTEGRITY in status.stdout

    again = cli("viewer", "install", "--data-dir", str(data), "--from", str(source))
    assert again.returncode == 0, again.stderr
    second = installed(data)
    assert second is not None and second.root != first.root
    assert not first.root.exists()  # the one replaced is gone, no temp dir left
    assert sorted(p.name for p in (data / VIEWER_DIR).iterdir()) == sorted(
        [CURRENT, second.root.name])


def test_a_tarball_that_is_not_the_pinned_package_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fake = small_viewer(tmp_path / "ohif-app-3.13.2.tgz")
    result = cli("viewer", "install", "--data-dir", str(data), "--from", str(fake))
    assert result.returncode == 1
    assert "is not @ohif/app@3.13.2 as published" in result.stderr and INTEGRITY in result.stderr
    assert installed(data) is None
    assert not (data / VIEWER_DIR / CURRENT).exists()
    assert [p.name for p in (data / VIEWER_DIR).iterdir()] == []  # no download left behind


@pytest.mark.parametrize("members, links, why", [
    ({"package/dist/index.html": INDEX, "package/dist/../../../evil.js": b"x"}, None,
     "outside itself"),
    ({"package/dist/index.html": INDEX, "/etc/evil.js": b"x"}, None, "outside itself"),
    ({"package/dist/index.html": INDEX}, {"package/dist/passwd": "/etc/passwd"},
     "link or device"),
    ({"package/README.md": b"no dist"}, None, "no package/dist/index.html"),
])
def test_a_bad_tarball_leaves_the_installed_viewer_as_it_was(
        tmp_path: Path, members: dict[str, bytes], links: dict[str, str] | None,
        why: str) -> None:
    data = tmp_path / "deep" / "data"
    good = small_viewer(tmp_path / "good.tgz")
    before = install(data, good, "test", integrity=integrity_of(good))
    bad = tarball(tmp_path / "bad.tgz", members, links)
    with pytest.raises(ViewerInstallError, match=why):
        install(data, bad, "test", integrity=integrity_of(bad))
    assert installed(data) == before
    assert (before.dist / "index.html").read_bytes() == INDEX
    assert sorted(p.name for p in (data / VIEWER_DIR).iterdir()) == sorted(
        [CURRENT, before.root.name])  # the refused extraction's temp dir is gone
    assert not list(tmp_path.rglob("evil.js")) and not list(tmp_path.rglob("passwd"))


class _Registry(BaseHTTPRequestHandler):
    """An npm registry on loopback: the package's metadata and its tarball."""

    tarball: Path
    integrity: str

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path.lower() in (f"/@ohif%2fapp/{VERSION}", f"/@ohif/app/{VERSION}"):
            body = json.dumps({"dist": {
                "integrity": self.integrity,
                "tarball": f"http://127.0.0.1:{port}/app.tgz"}}).encode()
        elif self.path == "/app.tgz":
            body = self.tarball.read_bytes()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[tuple[str, type[_Registry]]]:
    handler = type("Registry", (_Registry,), {"tarball": ohif_tarball(),
                                              "integrity": INTEGRITY})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    thread.join()


def test_from_an_npm_registry_and_one_publishing_other_bytes(
        tmp_path: Path, registry: tuple[str, type[_Registry]]) -> None:
    url, handler = registry
    ok = cli("viewer", "install", "--data-dir", str(tmp_path / "a"), "--registry", url)
    assert ok.returncode == 0, ok.stderr
    assert "from npm http://127.0.0.1:" in ok.stdout
    assert installed(tmp_path / "a") is not None

    handler.integrity = "sha512-" + "A" * 86 + "=="  # a registry publishing something else
    refused = cli("viewer", "install", "--data-dir", str(tmp_path / "b"), "--registry", url)
    assert refused.returncode == 1
    assert "not the pinned" in refused.stderr
    assert installed(tmp_path / "b") is None


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_a_member_gives_its_viewer_to_a_node_without_internet(make_node) -> None:
    source = ohif_tarball()
    a = start_founder(make_node)
    assert cli("viewer", "install", "--data-dir", str(a.data_dir), "--from",
               str(source)).returncode == 0
    b = joiner(make_node, a, "nodeb", invite(a)).start()
    wait_for(lambda: all(len(mesh_view(n)["members"]) == 2 for n in (a, b)), 30)
    started = time.monotonic()
    # No --member: npm is not tried (--no-registry), B's running node names its peers.
    result = cli("viewer", "install", "--data-dir", str(b.data_dir), "--no-registry",
                 "--http-port", str(b.http_port))
    assert result.returncode == 0, result.stderr
    print(f"install from a member: {time.monotonic() - started:.1f} s")
    assert f"from member 127.0.0.1:{a.mesh_port}" in result.stdout
    got = installed(b.data_dir)
    assert got is not None and got.integrity == INTEGRITY
    assert got.archive.read_bytes() == source.read_bytes()
    page = requests.get(f"http://127.0.0.1:{b.http_port}/viewer?StudyInstanceUIDs=1.2.3",
                        timeout=10)
    assert page.status_code == 200 and "app-config.js" in page.text

    # The mesh API serves it to members only: a client without a member's certificate
    # is refused, never handed the tarball.
    stranger = requests.get(f"https://127.0.0.1:{a.mesh_port}/mesh/viewer", verify=False,
                            timeout=10)
    assert stranger.status_code in (401, 403), stranger.status_code
    assert not stranger.content.startswith(b"\x1f\x8b")

    # A member without a viewer says so; the install fails with that reason.
    c_data = b.data_dir.parent / "lonely"
    lone = cli("viewer", "install", "--data-dir", str(c_data), "--no-registry",
               "--member", f"127.0.0.1:{a.mesh_port}")
    assert lone.returncode == 1 and "in no mesh" in lone.stderr
