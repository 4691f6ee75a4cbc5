"""``pacsmesh import``, ``studies`` and ``fsck``: the data dir's archive, written, read and
checked directly."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from node.app import close_archive, open_archive, open_storage
from node.cli import media
from node.cli.common import _config, _fail, data_dir_option, err, progress_bar
from node.config import NodeConfig
from node.datadir import INDEX_FILE, StartupError, lock_data_dir
from node.dicom_header import InvalidDataset
from node.dicom_validate import MissingUID, NotPart10
from node.http.api import study_json
from node.index import Index
from node.media.medium import is_medium
from node.reconcile import ReconcileReport, reconcile
from node.storage import StorageError


@click.command("import")
@data_dir_option
@click.option("--to-node", metavar="URL",
              help="Send to a running node (POST URL/api/media) instead of the data dir.")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
def import_(data_dir: Path | None, to_node: str | None, paths: tuple[Path, ...]) -> None:
    """Store DICOM files, folders (recursively) and portable media (a folder or disc
    with a DICOMDIR, a .zip, an .iso) into the archive."""
    if to_node is not None:
        media.exit_unless(media.import_to_node(to_node, list(paths)))
        return
    config = _config(data_dir=data_dir)
    media_paths = [p for p in paths if is_medium(p)]
    whole = True
    if media_paths:
        results = media.run_or_fail(media.import_media(config, media_paths), "store it")
        for path, found in results:
            media.report(path, found)
        paths = tuple(p for p in paths if p not in media_paths)
        whole = not any(found.unreadable or found.missing for _, found in results)
        if not paths:
            media.exit_unless(whole)
            return
    files = list(_walk(paths))
    try:
        counts = asyncio.run(import_files(config, files))
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
    if counts["failed"] or counts["refused"] or not whole:
        sys.exit(1)


def _walk(paths: tuple[Path, ...]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


async def import_files(config: NodeConfig, files: list[Path]) -> dict[str, int]:
    lock = lock_data_dir(config.data_dir, config.data_dir_gid)
    counts = {"stored": 0, "duplicate": 0, "conflict": 0, "skipped": 0, "failed": 0,
              "tombstoned": 0, "refused": 0}
    try:
        archive, _ = await open_archive(config.data_dir, open_storage(config))
        try:
            progress = progress_bar("importing")
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
            await close_archive(archive)
    finally:
        lock.close()
    return counts


@click.command()
@data_dir_option
def fsck(data_dir: Path | None) -> None:
    """Check every object file against every index row (the node must be stopped).

    Start-up checks only what a crash can leave (node/reconcile.py); this finds damage
    done outside PACSmesh too: files deleted, copied in or altered by hand."""
    config = _config(data_dir=data_dir)
    try:
        report = asyncio.run(_fsck(config))
    except StartupError as exc:
        _fail(str(exc))
        return
    click.echo(
        f"checked: {report.reindexed} reindexed, {report.quarantined} quarantined, "
        f"{report.rows_without_file} rows without a file dropped, "
        f"{report.tombstoned_removed} deleted files removed, "
        f"{report.temp_removed} temporaries removed")


async def _fsck(config: NodeConfig) -> ReconcileReport:
    lock = lock_data_dir(config.data_dir, config.data_dir_gid)
    try:
        archive, _ = await open_archive(config.data_dir, open_storage(config))
        try:
            return await reconcile(archive.storage, archive.index)
        finally:
            await close_archive(archive)
    finally:
        lock.close()


@click.command()
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

