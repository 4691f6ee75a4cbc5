"""``pacsmesh patients history ID``: what the HIS changed about a patient, when, and from
which message (the patient events of node.patients), and what it presents as now."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from node.cli.common import _config, data_dir_option
from node.datadir import INDEX_FILE
from node.index import Index
from node.patients.current import Current
from node.patients.events import PatientEvent, PatientKey
from node.patients.store import PatientStore


@click.group()
def patients() -> None:
    """Patient identity as HL7 ADT made it (IHE PIR)."""


async def _history(path: Path, patient_id: str, issuer: str | None
                   ) -> list[tuple[PatientKey, Current, list[PatientEvent]]]:
    index = await Index.open(path)
    try:
        async def unknown(_: str) -> bool:
            return False
        store = PatientStore(index.db, unknown)
        await store.open()
        keys = sorted(k for k in store.identities.keys() if k.id == patient_id
                      and (issuer is None or k.issuer == issuer))
        return [(k, store.identities.current(k), store.history(k)) for k in keys]
    finally:
        await index.close()


@patients.command()
@data_dir_option
@click.argument("patient_id")
@click.option("--issuer", help="Only this Issuer of Patient ID (PID-3.4), e.g. HOSP.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def history(data_dir: Path | None, patient_id: str, issuer: str | None, as_json: bool) -> None:
    """The patient events about PATIENT_ID (and the patients merged with it)."""
    config = _config(data_dir=data_dir)
    found = asyncio.run(_history(config.data_dir / INDEX_FILE, patient_id, issuer))
    if as_json:
        click.echo(json.dumps([{"patient": [k.id, k.issuer],
                                "current": {"patient": [now.key.id, now.key.issuer],
                                            "attributes": now.attributes,
                                            "merged": now.merged},
                                "events": [e.to_json() for e in events]}
                               for k, now, events in found], ensure_ascii=False))
        return
    if not found:
        click.echo(f"no patient events about {patient_id}")
        return
    console = Console()
    for key, now, events in found:
        table = Table(title=f"{key}: now {now.key}"
                            f"{' (merged)' if now.merged else ''} {now.attributes}")
        for col in ("When (UTC)", "Event", "Message", "Patient", "Prior", "Changes", "Node"):
            table.add_column(col, overflow="fold")
        for e in events:
            table.add_row(e.at, str(e.kind), e.event_id, str(e.patient),
                          str(e.prior or ""), json.dumps(e.attributes, ensure_ascii=False),
                          e.origin[:15])
        console.print(table)
