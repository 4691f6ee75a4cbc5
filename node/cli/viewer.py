"""``pacsmesh viewer install`` and ``viewer status``: the OHIF Viewer into the data dir, from
npm where the registry is reachable, from a local tarball, or from any mesh member that has
it (node.viewer_bundle checks every one against the pinned integrity hash)."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import click

from discovery.membership import MembershipError, MembershipStore
from node.cli.common import _config, _fail, data_dir_option, local_url
from node.config import NodeConfig
from node.identity import IdentityError, load_or_create_identity
from node.viewer_bundle import (
    INTEGRITY,
    PACKAGE,
    VERSION,
    VIEWER_DIR,
    Installed,
    ViewerInstallError,
    install,
    installed,
)
from replication.viewer_share import ViewerNotFetched, fetch

REGISTRY = "https://registry.npmjs.org"


@click.group()
def viewer() -> None:
    """The OHIF web viewer this node serves at / (e.g. /viewer?StudyInstanceUIDs=...)."""


def from_registry(registry: str, dest: Path) -> str:
    """Download the pinned version's tarball; returns its URL. The registry's own integrity
    must match the pinned one, or the registry is serving something else."""
    meta_url = f"{registry.rstrip('/')}/{quote(PACKAGE, safe='@')}/{VERSION}"
    with urllib.request.urlopen(meta_url, timeout=30) as rsp:
        dist = json.loads(rsp.read())["dist"]
    if dist.get("integrity") != INTEGRITY:
        raise ViewerInstallError(f"{meta_url} publishes integrity {dist.get('integrity')}, "
                                 f"not the pinned {INTEGRITY}")
    with urllib.request.urlopen(dist["tarball"], timeout=60) as rsp, dest.open("wb") as out:
        while chunk := rsp.read(1 << 20):
            out.write(chunk)
    return str(dist["tarball"])


def _member_endpoints(members: tuple[str, ...]) -> list[tuple[str, int]]:
    out = []
    for member in members:
        host, _, port = member.rpartition(":")
        if not host or not port.isdigit():
            _fail(f"--member is written HOST:MESH_PORT, got {member!r}")
        out.append((host.strip("[]"), int(port)))
    return out


def from_members(data_dir: Path, aet: str, endpoints: list[tuple[str, int]], dest: Path) -> str:
    try:
        roster = MembershipStore(data_dir).load()
        if roster is None:
            raise MembershipError("this node is in no mesh (pacsmesh mesh init or run --join)")
        identity = load_or_create_identity(data_dir, aet)
    except (MembershipError, IdentityError) as exc:
        raise ViewerNotFetched(f"cannot ask members: {exc}") from None
    view = roster.evaluate()
    certs = [m.cert_pem for n, m in view.members.items() if n != identity.node_id]
    who, _ = asyncio.run(fetch(identity, certs, endpoints, dest))
    return f"member {who}"


def _peers_of_running_node(config: NodeConfig) -> list[tuple[str, int]]:
    """Where the running node's peers' mesh APIs are (its peer table)."""
    url, context = local_url(config, "/api/peers")
    request = urllib.request.Request(url)
    if os.environ.get("PACSMESH_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['PACSMESH_TOKEN']}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as rsp:
            peers = json.loads(rsp.read())
    except (OSError, ValueError) as exc:
        raise ViewerNotFetched(f"no running node at {url} to name its peers ({exc}); "
                               "give --member HOST:MESH_PORT") from None
    return [(address, int(p["mesh_port"])) for p in peers if p.get("mesh_port")
            for address in p.get("addresses", [])]


@viewer.command("install")
@data_dir_option
@click.option("--from", "tarball", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A local npm tarball of the viewer (npm pack @ohif/app@" + VERSION + ").")
@click.option("--member", "members", multiple=True, metavar="HOST:MESH_PORT",
              help="Fetch it from this mesh member (repeatable); default: npm, then the "
                   "running node's peers.")
@click.option("--registry", default=REGISTRY, show_default=True, help="The npm registry.")
@click.option("--http-port", type=int,
              help="The running node's HTTP port, to ask for its peers (default: its config).")
@click.option("--no-registry", is_flag=True, help="Do not try npm (a site without internet).")
def viewer_install(data_dir: Path | None, tarball: Path | None, members: tuple[str, ...],
                   registry: str, http_port: int | None, no_registry: bool) -> None:
    """Install the OHIF Viewer (@ohif/app, pinned) into the data dir; the node serves it
    at once, no restart needed."""
    config = _config(data_dir=data_dir, http_port=http_port)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".viewer-", dir=_scratch(config.data_dir)) as tmp:
        dest = Path(tmp) / "package.tgz"
        failures: list[str] = []
        source = ""
        if tarball is not None:
            dest, source = tarball, f"file {tarball}"
        if not source and not members and not no_registry:
            try:
                source = "npm " + from_registry(registry, dest)
            except (OSError, ValueError, KeyError, ViewerInstallError) as exc:
                failures.append(f"npm: {exc}")
        if not source:
            try:
                endpoints = (_member_endpoints(members) if members
                             else _peers_of_running_node(config))
                source = from_members(config.data_dir, config.aet, endpoints, dest)
            except ViewerNotFetched as exc:
                failures.append(str(exc))
        if not source:
            _fail("the viewer could not be fetched: " + "; ".join(failures), code=1)
        try:
            done = install(config.data_dir, dest, source)
        except (ViewerInstallError, OSError) as exc:
            _fail(str(exc), code=1)
            return
    click.echo(f"installed {PACKAGE}@{done.version} from {source}: {done.files} files, "
               f"{done.bytes / 1e6:.1f} MB, in {time.monotonic() - started:.1f} s")
    click.echo("open it at /viewer on this node's HTTP port")


def _scratch(data_dir: Path) -> Path:
    # Beside the install: one file system, and a 50 MB download does not land in /tmp.
    path = data_dir / VIEWER_DIR
    path.mkdir(parents=True, exist_ok=True)  # modes from the umask (node.data_dir_modes)
    return path


@viewer.command("status")
@data_dir_option
def viewer_status(data_dir: Path | None) -> None:
    """Which viewer the data dir holds, and where it came from."""
    config = _config(data_dir=data_dir)
    try:
        here: Installed | None = installed(config.data_dir)
    except ViewerInstallError as exc:
        _fail(str(exc), code=1)
        return
    if here is None:
        _fail("no viewer is installed (pacsmesh viewer install)", code=1)
        return
    click.echo(f"{PACKAGE}@{here.version} {here.integrity} from {here.source}: {here.files} "
               f"files, {here.bytes / 1e6:.1f} MB in {here.root}")
