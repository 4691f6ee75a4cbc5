"""The ``pacsmesh`` command."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import ssl
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from discovery.invite import InviteError
from discovery.invite_pins import issue_invite
from discovery.join_policy import join_text
from discovery.mdns import interface_addresses
from discovery.membership import (
    MembershipError,
    MembershipStore,
    admin_credentials,
    init_mesh,
    revoke,
)
from discovery.roster import RosterError
from node import __version__, wait_cli
from node.access_cli import audit, token
from node.app import open_archive, open_storage, run_node
from node.cli_common import _config, _fail, data_dir_option, err
from node.config import (
    ACCESS_MODES,
    HTTP_AUTH_MODES,
    HTTP_TLS_MODES,
    QUERY_SCOPES,
    ConfigError,
    NodeConfig,
    RemoteAE,
    parse_remote_ae,
)
from node.data_dir_modes import set_process_umask
from node.datadir import INDEX_FILE, StartupError, lock_data_dir
from node.dicom.retrieve_scu import RetrieveError, Selector, study_identifier
from node.dicom.scp import configure_pynetdicom
from node.dicom.scu import AssociationFailed, echo
from node.dicom.send_scu import Counts, Outgoing, send
from node.dicom_header import InvalidDataset
from node.dicom_validate import MissingUID, NotPart10
from node.http.api import study_json
from node.http.serving import local_client
from node.identity import (
    CERT_FILE,
    IDENTITY_DIR,
    IdentityError,
    load_or_create_identity,
    normalize_node_id,
)
from node.index import Index
from node.log_format import escape_last_resort, setup_logging
from node.pull import METHODS, ProgressHooks, PullRequest, pull
from node.query import QueryError, parse_identifier
from node.storage import StorageError
from replication import spool
from replication.tombstone import TombstoneError, is_admin_key, make_tombstone


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pacsmesh")
def main() -> None:
    """PACSmesh: a peer-to-peer, self-sufficient PACS node."""
    # Before anything is created: the data dir holds patient names, IDs and the audit trail.
    set_process_umask()
    # Every command's log lines, not only the node's, may carry what the network sent.
    escape_last_resort()


@main.command()
@data_dir_option
@click.option("--aet", help="This node's AE title (default: derived from the host name).")
@click.option("--bind", help="Address to listen on (default 0.0.0.0).")
@click.option("--dicom-port", type=int, help="DICOM port (default 11112).")
@click.option("--http-port", type=int, help="HTTP port (default 8080).")
@click.option("--modality", "modalities", multiple=True, metavar="AET@HOST:PORT",
              help="A C-MOVE destination; repeatable.")
@click.option("--mdns/--no-mdns", default=None, help="Announce and browse with mDNS.")
@click.option("--mesh-port", type=int, help="Mesh API port, TLS between nodes (default 11113).")
@click.option("--peer", "peers", multiple=True, metavar="HOST:PORT",
              help="A peer's mesh address, for networks mDNS does not cross; repeatable.")
@click.option("--join", help="Invite token: join the mesh through the first member reached.")
@click.option("--interface", "interfaces", multiple=True, metavar="NAME",
              help="Announce on this network interface only; repeatable (default: all).")
@click.option("--device-type", help="ARCHIVE (site server) or WSD (workstation).")
@click.option("--replicas", type=int, help="Keep every study on this many nodes (default 2).")
@click.option("--query-scope", type=click.Choice(QUERY_SCOPES),
              help="C-FIND answers from the mesh catalog (default) or local holdings only.")
@click.option("--cache-bytes", type=int,
              help="Bytes of instances fetched from the mesh kept here (default 10 GiB).")
@click.option("--dicom-tls/--no-dicom-tls", default=None,
              help="DICOM over TLS on the DICOM port (announced as _dicom-tls._tcp).")
@click.option("--dicom-tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM certificate for DICOM TLS (default: the node's own).")
@click.option("--dicom-tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM private key for DICOM TLS (default: the node's own).")
@click.option("--access", type=click.Choice(ACCESS_MODES),
              help="DICOM: strict associates only with known AEs (default open).")
@click.option("--allowed-aet", "allowed_aets", multiple=True, metavar="AET",
              help="An AE allowed to retrieve (and, when strict, to associate); repeatable.")
@click.option("--http-auth", type=click.Choice(HTTP_AUTH_MODES),
              help="HTTP bearer tokens: auto (once one exists; default), tokens, none.")
@click.option("--http-tls", type=click.Choice(HTTP_TLS_MODES),
              help="HTTPS on the HTTP port: on (with --http-tls-cert/-key), self-signed "
                   "(the node's own certificate), off (default).")
@click.option("--http-tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM certificate (chain) for HTTPS; with --http-tls-key, HTTPS is on.")
@click.option("--http-tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM private key for HTTPS.")
@click.option("--http-header-timeout", type=float,
              help="Seconds a client may take to send its request headers (default 10).")
@click.option("--http-max-body", type=int,
              help="Largest HTTP upload in bytes (default 1 GiB); larger ones get 413.")
@click.option("--encrypt-at-rest/--no-encrypt-at-rest", default=None,
              help="Seal stored objects with AES-256-GCM (key in <data-dir>/keys).")
@click.option("--at-rest-passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Derive the at-rest key from the passphrase in this file instead.")
@click.option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")
def run(**options: Any) -> None:
    """Run a node until interrupted."""
    config = _config(**options)
    setup_logging(config.log_level)
    try:
        asyncio.run(run_node(config))
    except StartupError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


def _walk(paths: tuple[Path, ...]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


@main.command("import")
@data_dir_option
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
def import_(data_dir: Path | None, paths: tuple[Path, ...]) -> None:
    """Store DICOM files and folders (recursively) into the archive."""
    config = _config(data_dir=data_dir)
    files = list(_walk(paths))
    try:
        counts = asyncio.run(_import(config, files))
    except StartupError as exc:
        _fail(str(exc))
        return
    click.echo(
        f"stored {counts['stored']}, duplicate {counts['duplicate']}, "
        f"conflicting {counts['conflict']}, skipped {counts['skipped']} non-DICOM, "
        f"failed {counts['failed']}"
        + (f", refused {counts['tombstoned']} of deleted studies" if counts["tombstoned"] else "")
        + (f", refused {counts['refused']} invalid" if counts["refused"] else "")
    )
    if counts["failed"] or counts["refused"]:
        sys.exit(1)


async def _import(config: NodeConfig, files: list[Path]) -> dict[str, int]:
    lock = lock_data_dir(config.data_dir, config.data_dir_gid)
    counts = {"stored": 0, "duplicate": 0, "conflict": 0, "skipped": 0, "failed": 0,
              "tombstoned": 0, "refused": 0}
    try:
        archive, _ = await open_archive(config.data_dir, open_storage(config))
        try:
            progress = _progress("importing")
            with progress:
                task = progress.add_task("import", total=len(files))
                for path in files:
                    try:
                        data = await asyncio.to_thread(path.read_bytes)
                        result = await asyncio.to_thread(archive.ingest, data, "IMPORT")
                        counts[result.status.value] += 1
                    except (NotPart10, MissingUID):  # not an instance (e.g. a DICOMDIR)
                        counts["skipped"] += 1
                    except InvalidDataset as exc:  # cut short, garbled, or bad UIDs
                        counts["refused"] += 1
                        err.print(f"refused: {path}: {exc}", markup=False, highlight=False,
                                  soft_wrap=True)
                    except (OSError, StorageError) as exc:
                        counts["failed"] += 1
                        err.print(f"failed: {path}: {exc}", markup=False, highlight=False)
                    progress.advance(task)
        finally:
            await archive.index.close()
    finally:
        lock.close()
    return counts



@main.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def studies(data_dir: Path | None, as_json: bool) -> None:
    """List the studies in the archive."""
    config = _config(data_dir=data_dir)
    if not (config.data_dir / INDEX_FILE).exists():
        _fail(f"no archive in {config.data_dir} (start a node or import files first)")
    rows = asyncio.run(_studies(config.data_dir / INDEX_FILE))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} studies in {config.data_dir}")
    for col in ("Patient ID", "Patient name", "Date", "Modalities", "Description",
                "Series", "Instances", "Study Instance UID"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["PatientID"], r["PatientName"], r["StudyDate"],
                      ",".join(r["ModalitiesInStudy"]), r["StudyDescription"],
                      str(r["series"]), str(r["instances"]), r["StudyInstanceUID"])
    Console().print(table)


async def _studies(index_path: Path) -> list[dict[str, Any]]:
    index = await Index.open(index_path)
    try:
        return [study_json(r) for r in await index.studies()]
    finally:
        await index.close()


def _local_url(config: NodeConfig, path: str) -> tuple[str, ssl.SSLContext | None]:
    scheme, context = local_client(config.http_tls, config.http_tls_cert,
                                   config.data_dir / IDENTITY_DIR / CERT_FILE)
    return f"{scheme}://127.0.0.1:{config.http_port}{path}", context


def _running_node_json(config: NodeConfig, path: str) -> Any:
    url, context = _local_url(config, path)
    request = urllib.request.Request(url)
    if os.environ.get("PACSMESH_TOKEN"):  # a node that asks for tokens (pacsmesh token add)
        request.add_header("Authorization", f"Bearer {os.environ['PACSMESH_TOKEN']}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as rsp:
            return json.loads(rsp.read())
    except (OSError, ValueError) as exc:
        _fail(f"no running node answers at {url} ({exc}); is it started?", code=1)
        raise AssertionError("unreachable") from None


@main.command()
@data_dir_option
@click.option("--http-port", type=int, help="The running node's HTTP port (default: its config).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--wait-replicated", is_flag=True,
              help="Wait until every study this node received is on its owners: exit 0,"
                   " or 1 after --timeout with what is still owed.")
@click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds --wait-replicated waits.")
def status(data_dir: Path | None, http_port: int | None, as_json: bool,
           wait_replicated: bool, timeout: float) -> None:
    """A running node's archive, replication backlog and peers, at a glance."""
    config = _config(data_dir=data_dir, http_port=http_port)
    if wait_replicated:
        _wait_replicated(config, timeout)
        return
    state = _running_node_json(config, "/api/status")
    peer_rows = _running_node_json(config, "/api/peers")
    joining = _running_node_json(config, "/api/mesh").get("join")
    if as_json:
        click.echo(json.dumps({"status": state, "peers": peer_rows, "join": joining}, indent=2))
        return
    click.echo(f"node {state['aet']} ({state['node_id']}), PACSmesh {state['version']}")
    click.echo(f"archive: {state['studies']} studies, {state['instances']} instances, "
               f"{state['bytes'] / 1e6:.1f} MB")
    click.echo(f"replication: {state['outbox_depth']} copies waiting, "
               f"{state['under_replicated']} under-replicated studies")
    counts: dict[str, int] = {}
    for p in peer_rows:
        counts[p["state"]] = counts.get(p["state"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    click.echo(f"peers: {summary}")
    if join_text(joining):
        click.echo(f"mesh: {join_text(joining)}")
    replication = state.get("replication")
    if replication:
        got = replication["received"]
        click.echo(f"received from members: {got['stored']} new, {got['duplicate']} "
                   f"duplicate, {got['resumed']} resumed, {got['bytes'] / 1e6:.1f} MB")
        _replication_table(replication["peers"])


def _wait_replicated(config: NodeConfig, timeout: float) -> None:
    result = wait_cli.wait_replicated(lambda: _running_node_json(config, "/api/status"),
                                      timeout)
    if result.replicated:
        click.echo(f"replicated: every study this node received is on its owners"
                   f" (after {result.waited:.1f} s)")
        return
    for line in wait_cli.owed_lines(result.status):
        click.echo(line)
    _fail(f"still not replicated after {timeout:g} s", code=1)


def _replication_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title="replication to members")
    for col in ("Member", "State", "Breaker", "Copies owed", "MB owed", "Rate MB/s",
                "Catch-up", "ETA"):
        table.add_column(col, overflow="fold")
    for r in rows:
        up = r["catch_up"]
        table.add_row(
            r["aet"] or r["node_id"][:15], r["state"], r["breaker"], str(r["outbox_depth"]),
            f"{r['outbox_bytes'] / 1e6:.1f}", f"{r['bytes_per_second'] / 1e6:.2f}",
            f"{up['delivered']}/{up['queued']}", _eta_text(up["eta_seconds"]),
        )
    Console().print(table)


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "stalled"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@main.command()
@data_dir_option
@click.option("--http-port", type=int, help="The running node's HTTP port (default: its config).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def peers(data_dir: Path | None, http_port: int | None, as_json: bool) -> None:
    """List the peers a running node knows, and whether they are alive."""
    config = _config(data_dir=data_dir, http_port=http_port)
    rows = _running_node_json(config, "/api/peers")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} peers")
    for col in ("AE title", "State", "Addresses", "HTTP", "DICOM", "Last seen", "Node id"):
        table.add_column(col, overflow="fold")
    for r in rows:
        ago = r.get("last_seen_seconds_ago")
        table.add_row(r["aet"], r["state"], " ".join(r["addresses"]), str(r["http_port"]),
                      str(r["dicom_port"]), "never" if ago is None else f"{ago:.0f} s ago",
                      r["node_id"])
    Console().print(table)


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        _fail(f"a duration is written like 30m, 24h or 7d, got {text!r}")
        raise AssertionError("unreachable") from None


@main.group()
def mesh() -> None:
    """Create a mesh, invite nodes into it, revoke them, see who is in it."""


@mesh.command("init")
@data_dir_option
@click.option("--aet", help="This node's AE title, as the roster shows it.")
def mesh_init(data_dir: Path | None, aet: str | None) -> None:
    """Make this node the first member of a new mesh (it holds the admin key)."""
    config = _config(data_dir=data_dir, aet=aet)
    try:
        identity = load_or_create_identity(config.data_dir, config.aet)
        store = MembershipStore(config.data_dir)
        roster = init_mesh(store, identity, config.aet)
    except (IdentityError, MembershipError, OSError) as exc:
        _fail(str(exc))
        return
    click.echo(f"mesh {roster.mesh_id} created; this node is its first member")
    click.echo(f"node id: {identity.node_id}")
    click.echo(f"admin key: {store.admin_key_path} (keep it safe; it signs invites)")


@mesh.command("invite")
@data_dir_option
@click.option("--expires", default="24h", show_default=True, help="Validity: 30m, 24h, 7d.")
@click.option("--uses", default=1, show_default=True, type=click.IntRange(min=1),
              help="How many nodes may join with it.")
@click.option("--seed", "seeds", multiple=True, metavar="HOST:PORT",
              help="Member addresses to put in the token (default: this node's).")
@click.option("--no-seed", is_flag=True, help="Put no addresses in the token (mDNS, --peer).")
@click.option("--no-pin", is_flag=True,
              help="Pin no member certificates (a joiner then trusts any server).")
def mesh_invite(
    data_dir: Path | None, expires: str, uses: int, seeds: tuple[str, ...], no_seed: bool,
    no_pin: bool,
) -> None:
    """Print an invite token (the last line): `pacsmesh run --join TOKEN` uses it."""
    config = _config(data_dir=data_dir)
    named = seeds
    if not seeds and not no_seed:
        seeds = tuple(f"{a}:{config.mesh_port}" for a in interface_addresses(config.interfaces))
    try:
        identity = load_or_create_identity(config.data_dir, config.aet)
        token, lines = issue_invite(MembershipStore(config.data_dir), identity,
                                    _duration(expires), uses, seeds, named, pin=not no_pin)
    except (MembershipError, InviteError, IdentityError) as exc:
        _fail(str(exc))
        return
    click.echo(f"invite for {uses} node(s), valid {expires}:")
    for line in lines:
        click.echo(line)
    click.echo(token)


@mesh.command("revoke")
@data_dir_option
@click.argument("node_id", metavar="NODEID")
def mesh_revoke(data_dir: Path | None, node_id: str) -> None:
    """Remove a node from the mesh (admin): every member refuses it from then on."""
    config = _config(data_dir=data_dir)
    try:
        target = normalize_node_id(node_id)
        revoke(MembershipStore(config.data_dir), target)
    except (IdentityError, MembershipError, RosterError) as exc:
        _fail(str(exc))
        return
    click.echo(f"revoked {target}; members learn it as the roster spreads")


@main.command("delete")
@data_dir_option
@click.option("--study", "study_uid", required=True, metavar="UID",
              help="StudyInstanceUID of the study to delete.")
@click.option("--reason", default="", help="Why (kept with the tombstone; no patient names).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(data_dir: Path | None, study_uid: str, reason: str, yes: bool) -> None:
    """Delete a study from every node of the mesh (admin): a signed tombstone."""
    config = _config(data_dir=data_dir)
    try:
        admin, roster = admin_credentials(MembershipStore(config.data_dir))
        if not is_admin_key(admin, roster.admin_key):
            raise MembershipError("the admin key here is not the one of this node's mesh")
        node_id = load_or_create_identity(config.data_dir, config.aet).node_id
        stone = make_tombstone(admin, roster.mesh_id, study_uid, node_id, time.time(), reason)
    except (MembershipError, IdentityError, TombstoneError) as exc:
        _fail(str(exc))
        return
    if not yes:
        click.confirm(f"Delete study {study_uid} from every node of the mesh, for good?",
                      abort=True)
    try:
        spool.drop(config.data_dir, stone.sig[:32], stone.to_json())
    except OSError as exc:
        _fail(f"cannot write the tombstone: {exc}")
        return
    click.echo(f"study {study_uid} deleted: the node on {config.data_dir} applies the "
               "tombstone within seconds (or when it next starts), and members as it spreads")


@mesh.command("status")
@data_dir_option
@click.option("--http-port", type=int, help="The running node's HTTP port (default: its config).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def mesh_status(data_dir: Path | None, http_port: int | None, as_json: bool) -> None:
    """Show the roster and which members are online (asks the running node)."""
    config = _config(data_dir=data_dir, http_port=http_port)
    try:
        roster = MembershipStore(config.data_dir).load()
    except MembershipError as exc:
        _fail(str(exc))
        return
    if roster is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # node not running
            url = f"http://127.0.0.1:{config.http_port}/api/mesh"
            with urllib.request.urlopen(url, timeout=3) as rsp:
                joining = join_text(json.loads(rsp.read()).get("join"))
            if joining:
                _fail(f"not a member yet: {joining}", code=1)
        _fail(f"no mesh in {config.data_dir} (pacsmesh mesh init, or run --join TOKEN)", code=1)
        return
    view = roster.evaluate()
    states: dict[str, str] = {}
    try:
        url, context = _local_url(config, "/api/peers")
        with urllib.request.urlopen(url, timeout=3, context=context) as rsp:
            states = {p["node_id"]: p["state"] for p in json.loads(rsp.read())}
        own = load_or_create_identity(config.data_dir, config.aet).node_id
        states[own] = "this node"
    except (OSError, ValueError, IdentityError):
        pass  # node not running: the roster alone is still worth showing
    members = [
        {"node_id": m.node_id, "aet": m.aet, "admitted_by": m.admitted_by,
         "state": states.get(m.node_id, "unknown")}
        for m in sorted(view.members.values(), key=lambda m: m.admitted_at)
    ]
    if as_json:
        click.echo(json.dumps({"mesh": roster.mesh_id, "roster_version": view.version,
                               "members": members, "revoked": sorted(view.revoked)}, indent=2))
        return
    table = Table(title=f"mesh {roster.mesh_id}: {len(members)} member(s), "
                        f"roster version {view.version}")
    for col in ("AE title", "State", "Node id", "Admitted by"):
        table.add_column(col, overflow="fold")
    for m in members:
        table.add_row(m["aet"], m["state"], m["node_id"], m["admitted_by"][:15])
    Console().print(table)
    for node_id in sorted(view.revoked):
        Console().print(f"revoked: {node_id}")


def _progress(label: str) -> Progress:
    # Off when stderr is not a terminal: a log or a pipe gets the counts, not bar frames.
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def _remote(text: str) -> RemoteAE:
    try:
        return parse_remote_ae(text)
    except ConfigError as exc:
        _fail(str(exc))
        raise AssertionError("unreachable") from None


def _print_counts(counts: Counts) -> None:
    click.echo(str(counts))
    if counts.failed:
        sys.exit(1)


@main.command()
@data_dir_option
@click.option("--from", "source", required=True, metavar="AET@HOST:PORT",
              help="The PACS to pull from.")
@click.option("--study", "study_uid", metavar="UID", help="StudyInstanceUID to pull.")
@click.option("--patient", "patient_id", metavar="ID", help="Pull every study of this patient.")
@click.option("--aet", help="This node's AE title (default: its config).")
@click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True,
              help="auto: C-GET, or C-MOVE when the peer does not offer C-GET.")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port of a temporary storage SCP for C-MOVE when no node runs.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait.")
def retrieve(data_dir: Path | None, source: str, study_uid: str | None,
             patient_id: str | None, aet: str | None, method: str, port: int | None,
             timeout: float) -> None:
    """Pull studies from another PACS (C-GET, or C-MOVE) into this node's archive."""
    if (study_uid is None) == (patient_id is None):
        _fail("give exactly one of --study UID and --patient ID")
    remote = _remote(source)
    config = _config(data_dir=data_dir, aet=aet)
    configure_pynetdicom(debug=False)
    request = PullRequest(remote, Selector(study_uid, patient_id), method, port, timeout)
    bar = _progress("retrieving")

    def ingest(files: list[Path]) -> Counts:
        bar.stop()
        counts = asyncio.run(_import(config, files))
        return Counts(completed=counts["stored"] + counts["duplicate"],
                      failed=counts["failed"] + counts["skipped"] + counts["tombstoned"]
                      + counts["refused"],
                      warning=counts["conflict"])

    with bar:
        task = bar.add_task("retrieve", total=None)
        shown = ProgressHooks(lambda n: bar.update(task, total=n),
                             lambda n: bar.advance(task, n))
        try:
            report = pull(config, request, shown, ingest)
        except (RetrieveError, AssociationFailed, StartupError) as exc:
            bar.stop()
            _fail(str(exc), code=1)
            return
    click.echo(f"{report.studies} study(ies) from {remote} by {', '.join(sorted(report.methods))}"
               f"; the peer reported {report.peer}")
    _print_counts(report.counts)


@main.command("send")
@data_dir_option
@click.option("--to", "destination", required=True, metavar="AET@HOST:PORT",
              help="Where to send.")
@click.option("--study", "study_uid", required=True, metavar="UID",
              help="StudyInstanceUID of the study to send.")
@click.option("--aet", help="Calling AE title (default: this node's).")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait.")
def send_(data_dir: Path | None, destination: str, study_uid: str, aet: str | None,
          timeout: float) -> None:
    """Push a study's instances to another DICOM node (C-STORE), bytes as stored."""
    remote = _remote(destination)
    config = _config(data_dir=data_dir, aet=aet)
    if not (config.data_dir / INDEX_FILE).exists():
        _fail(f"no archive in {config.data_dir} (start a node or import files first)")
    try:
        items = asyncio.run(_study_files(config, study_uid))
    except QueryError as exc:
        _fail(f"--study {study_uid!r}: {exc}")
        return
    except StartupError as exc:
        _fail(str(exc))
        return
    if not items:
        _fail(f"no study {study_uid} in {config.data_dir}")
    configure_pynetdicom(debug=False)
    with _progress("sending") as bar:
        task = bar.add_task("send", total=len(items))
        try:
            counts = send(remote, config.aet, items, lambda: bar.advance(task), timeout)
        except AssociationFailed as exc:
            bar.stop()
            _fail(str(exc), code=1)
            return
    click.echo(f"{len(items)} instance(s) of study {study_uid} to {remote}")
    _print_counts(counts)


async def _study_files(config: NodeConfig, study_uid: str) -> list[Outgoing]:
    data_dir = config.data_dir
    index = await Index.open(data_dir / INDEX_FILE)
    try:
        rows = await index.instances_for(parse_identifier(study_identifier(study_uid)))
    finally:
        await index.close()
    storage = open_storage(config)
    return [Outgoing(storage.path(r.sha256), r.sop_uid, r.sop_class_uid, r.transfer_syntax_uid,
                     functools.partial(storage.plain_file, r.sha256))
            for r in rows]


@main.command("echo")
@click.argument("remote", metavar="AET@HOST:PORT")
@click.option("--aet", "calling", default=None, help="Calling AE title (default: this node's).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait.")
def echo_(remote: str, calling: str | None, timeout: float) -> None:
    """Send a C-ECHO (DICOM ping)."""
    peer = _remote(remote)
    calling_aet = calling or _config().aet
    start = time.monotonic()
    try:
        result = echo(peer, calling_aet, timeout)
    except AssociationFailed as exc:
        _fail(str(exc), code=1)
        return
    ms = (time.monotonic() - start) * 1000
    if result.ok:
        click.echo(f"C-ECHO {peer}: success in {ms:.0f} ms")
    else:
        _fail(f"C-ECHO {peer}: status 0x{result.status:04X}", code=1)


main.add_command(audit)
main.add_command(token)

if __name__ == "__main__":
    main()
