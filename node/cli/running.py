"""``pacsmesh run``, ``status`` and ``peers``: run a node, and ask the running node how it is."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from node import wait_cli
from node.app import run_node
from node.cli.common import _config, _fail, data_dir_option, running_node_json
from node.config import (
    ACCESS_MODES,
    DEFAULT_HL7_PORT,
    HTTP_AUTH_MODES,
    HTTP_TLS_MODES,
    QUERY_SCOPES,
    NodeConfig,
)
from node.datadir import StartupError
from node.log_format import setup_logging


@click.command()
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
@click.option("--hl7-port", type=int, is_flag=False, flag_value=DEFAULT_HL7_PORT,
              metavar="[PORT]",
              help="Receive HL7 v2 ADT over MLLP on this port (alone: 2575; default off).")
@click.option("--hl7-tls/--no-hl7-tls", default=None,
              help="MLLP over TLS with the node's certificate (or the DICOM TLS files).")
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


@click.command()
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
    from discovery.join_policy import join_text  # tenacity: not on ``run``'s path

    config = _config(data_dir=data_dir, http_port=http_port)
    if wait_replicated:
        _wait_replicated(config, timeout)
        return
    state = running_node_json(config, "/api/status")
    peer_rows = running_node_json(config, "/api/peers")
    joining = running_node_json(config, "/api/mesh").get("join")
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
    alerts = state.get("alerts", [])
    click.echo(f"alerts: {len(alerts)}" if alerts else "alerts: none")
    for alert in alerts:
        click.echo(f"  {alert['severity'].upper()}: {alert['message']}")


def _wait_replicated(config: NodeConfig, timeout: float) -> None:
    result = wait_cli.wait_replicated(lambda: running_node_json(config, "/api/status"),
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


@click.command()
@data_dir_option
@click.option("--http-port", type=int, help="The running node's HTTP port (default: its config).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def peers(data_dir: Path | None, http_port: int | None, as_json: bool) -> None:
    """List the peers a running node knows, and whether they are alive."""
    config = _config(data_dir=data_dir, http_port=http_port)
    rows = running_node_json(config, "/api/peers")
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

