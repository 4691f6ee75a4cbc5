"""``pacsmesh retrieve``, ``send`` and ``echo``: DICOM tools against other nodes and PACS."""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from pathlib import Path

import click

from node.app import open_storage
from node.cli.archive import import_files
from node.cli.common import _config, _fail, data_dir_option, progress_bar
from node.config import ConfigError, NodeConfig, RemoteAE, parse_remote_ae
from node.datadir import INDEX_FILE, StartupError
from node.dicom.patches import UnsupportedLibrary
from node.dicom.retrieve_scu import RetrieveError, Selector, study_identifier
from node.dicom.scp import configure_pynetdicom
from node.dicom.scu import AssociationFailed, echo
from node.dicom.send_scu import Counts, Outgoing, send
from node.index import Index
from node.pull import METHODS, ProgressHooks, PullRequest, pull
from node.query import QueryError, parse_identifier


@click.command()
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
    _configure_pynetdicom()
    request = PullRequest(remote, Selector(study_uid, patient_id), method, port, timeout)
    bar = progress_bar("retrieving")

    def ingest(files: list[Path]) -> Counts:
        bar.stop()
        counts = asyncio.run(import_files(config, files))
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


@click.command("send")
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
    _configure_pynetdicom()
    with progress_bar("sending") as bar:
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


@click.command("echo")
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


def _configure_pynetdicom() -> None:
    try:
        configure_pynetdicom(debug=False)
    except UnsupportedLibrary as exc:
        _fail(str(exc))
