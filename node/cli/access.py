"""``pacsmesh audit`` and ``pacsmesh token``: the audit trail and the HTTP API's tokens."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from node import tokens
from node.atna import syslog_line
from node.audit import AuditFilter, AuditReadError, parse_since, read_audit
from node.cli.common import _config, _fail, data_dir_option
from node.datadir import INDEX_FILE
from node.index import Index


def _index_path(data_dir: Path | None) -> Path:
    return _config(data_dir=data_dir).data_dir / INDEX_FILE


@click.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.option("--syslog", is_flag=True,
              help="Print RFC 5424 syslog lines with IHE ATNA (DICOM PS3.15 A.5) fields.")
@click.option("--since", metavar="ISO", help="Only events at or after this date or time.")
@click.option("--patient", metavar="ID", help="Only events about this Patient ID.")
@click.option("--study", metavar="UID", help="Only events about this StudyInstanceUID.")
@click.option("--action", metavar="A", help="Only this action (store, query, retrieve, ...).")
def audit(data_dir: Path | None, as_json: bool, syslog: bool, since: str | None,
          patient: str | None, study: str | None, action: str | None) -> None:
    """The audit trail: who accessed which patient and study, from where, when."""
    config = _config(data_dir=data_dir)
    try:
        where = AuditFilter(parse_since(since) if since else None, patient, study, action)
        rows = read_audit(config.data_dir / INDEX_FILE, where)
    except AuditReadError as exc:
        _fail(str(exc))
        return
    if syslog:
        for row in rows:
            click.echo(syslog_line(row, socket.gethostname()))
        return
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    table = Table(title=f"{len(rows)} audit event(s) in {config.data_dir}")
    for col in ("When", "Action", "Outcome", "Who", "From", "Patient ID", "Study", "Detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        who = " ".join(x for x in (r["user"], r["calling_aet"], r["node_id"][:15]) if x)
        table.add_row(datetime.fromtimestamp(r["at"]).isoformat(timespec="seconds"),
                      r["action"], r["outcome"], who, r["address"], r["patient_id"],
                      r["study_uid"], r["detail"])
    Console().print(table)


@click.group()
def token() -> None:
    """Bearer tokens for the HTTP API (roles: admin, reader, uploader)."""


async def _with_index(path: Path, work: str, *args: str) -> object:
    path.parent.mkdir(parents=True, exist_ok=True)
    index = await Index.open(path)
    try:
        return await getattr(index, work)(*args)
    finally:
        await index.close()


@token.command("add")
@data_dir_option
@click.option("--role", type=click.Choice(tokens.ROLES), required=True)
@click.option("--name", default="", help="Who or what uses it (shown in the audit trail).")
def token_add(data_dir: Path | None, role: str, name: str) -> None:
    """Make a token; it is printed once, on the last line, and stored only hashed."""
    made = tokens.new_token()
    asyncio.run(_with_index(_index_path(data_dir), "add_token", made.token_id, made.digest,
                            role, name))
    click.echo(f"token {made.token_id} ({role}{', ' + name if name else ''}); "
               "keep it now, it cannot be shown again:")
    click.echo(made.token)


@token.command("revoke")
@data_dir_option
@click.argument("token_or_id", metavar="TOKEN_OR_ID")
def token_revoke(data_dir: Path | None, token_or_id: str) -> None:
    """Revoke a token, given itself or its id; refused at once, even by a running node."""
    found = asyncio.run(_with_index(_index_path(data_dir), "revoke_token", token_or_id,
                                    tokens.digest(token_or_id)))
    if not found:
        _fail(f"no live token {token_or_id[:12]}", code=1)
    click.echo(f"revoked {token_or_id[:12]}")


@token.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def token_list(data_dir: Path | None, as_json: bool) -> None:
    """The tokens (ids, roles, names; never the tokens themselves)."""
    rows = asyncio.run(_with_index(_index_path(data_dir), "tokens"))
    assert isinstance(rows, list)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} token(s)")
    for col in ("Id", "Role", "Name", "Created", "Revoked"):
        table.add_column(col)
    for r in rows:
        def when(t: float | None) -> str:
            return datetime.fromtimestamp(t).isoformat(timespec="seconds") if t else ""
        table.add_row(r["id"], r["role"], r["name"], when(r["created_at"]),
                      when(r["revoked_at"]))
    Console().print(table)
