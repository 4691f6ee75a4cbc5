"""``pacsmesh mesh ...`` and ``delete``: make a mesh, invite, revoke, list it, delete a study
mesh-wide (the admin key signs)."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from pathlib import Path

import click
from rich.console import Console
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
from node.cli.common import _config, _fail, data_dir_option, local_url
from node.identity import IdentityError, load_or_create_identity, normalize_node_id
from replication import spool
from replication.tombstone import TombstoneError, is_admin_key, make_tombstone


@click.group()
def mesh() -> None:
    """Create a mesh, invite nodes into it, revoke them, see who is in it."""


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        _fail(f"a duration is written like 30m, 24h or 7d, got {text!r}")
        raise AssertionError("unreachable") from None


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
        url, context = local_url(config, "/api/peers")
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


@click.command("delete")
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

