"""``pacsmesh export`` (portable media out) and the media half of ``pacsmesh import``
(a folder with a DICOMDIR, a zip, an ISO image; into the data dir or a running node).

With the node stopped, export reads the data dir itself (only what is held here); while
it runs, the node makes the medium (fetching what other members hold) and this command
saves its answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from node.app import close_archive, open_archive, open_storage
from node.archive import Archive
from node.audit import Action, AuditEvent, AuditTrail
from node.cli.common import _config, _fail, data_dir_option, err, local_url, progress_bar
from node.config import NodeConfig
from node.datadir import DataDirInUse, StartupError, lock_data_dir
from node.media.dicomdir import MediaError
from node.media.export import MediaPlan, plan_media
from node.media.import_media import MediaCounts, import_medium
from node.media.medium import Medium, is_medium, open_medium
from node.media.select import select_instances
from node.media.writers import FORMATS, write_folder, write_iso, write_zip
from node.storage import StorageError

CHUNK = 2**20
T = TypeVar("T")


def _format_for(dest: Path, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    return {".zip": "zip", ".iso": "iso"}.get(dest.suffix.lower(), "folder")


@click.command("export")
@data_dir_option
@click.option("--study", "studies", multiple=True, metavar="UID",
              help="A study to write (repeat for several).")
@click.option("--patient", metavar="ID", help="Every study of this Patient ID.")
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path),
              help="Where the medium goes: a folder, a .zip or an .iso file.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="zip, iso or folder (default: from --to's suffix, else folder).")
@click.option("--http-port", type=int,
              help="The running node's HTTP port, when it holds the data dir (default: its"
                   " config).")
@click.option("--keep-syntax", is_flag=True,
              help="Write instances as stored (compressed ones stay compressed), for the"
                   " media profiles that allow it; default: Explicit VR Little Endian"
                   " (STD-GEN-CD).")
def export(data_dir: Path | None, studies: tuple[str, ...], patient: str | None, dest: Path,
           fmt: str | None, http_port: int | None, keep_syntax: bool) -> None:
    """Write studies as IHE PDI portable media (DICOMDIR, README.TXT, INDEX.HTM)."""
    if bool(studies) == (patient is not None):
        _fail("name the studies (--study UID ...) or a patient (--patient ID), not both")
    fmt = _format_for(dest, fmt)
    if dest.exists() and (fmt != "folder" or not dest.is_dir() or any(dest.iterdir())):
        _fail(f"{dest} exists; the medium goes to a new file or an empty folder")
    config = _config(data_dir=data_dir, http_port=http_port)
    click.echo(run_or_fail(
        _export_here(config, list(studies), patient, dest, fmt, keep_syntax), "read it",
        in_use=lambda: _export_through_node(config, list(studies), patient, dest, fmt,
                                            keep_syntax)))


def run_or_fail(work: Coroutine[Any, Any, T], what: str,
                in_use: Callable[[], T] | None = None) -> T:
    """Run ``work`` on its own loop; a medium or data dir refused is a one-line error.
    ``in_use``: what to do instead while a node holds the data dir."""
    try:
        return asyncio.run(work)
    except DataDirInUse as exc:
        if in_use is None:
            _fail(str(exc))
        else:
            return in_use()
    except (StartupError, MediaError) as exc:
        _fail(str(exc))
    except StorageError as exc:
        _fail(f"the archive could not {what}: {exc}", code=1)
    raise AssertionError("unreachable")


async def _export_here(config: NodeConfig, studies: list[str], patient: str | None,
                       dest: Path, fmt: str, keep_syntax: bool) -> str:
    lock = lock_data_dir(config.data_dir, config.data_dir_gid)
    try:
        archive, _ = await open_archive(config.data_dir, open_storage(config))
        trail = AuditTrail(archive.index)
        trail.start()
        try:
            instances = await select_instances(archive.index, None, studies, patient)
            plan = await asyncio.to_thread(plan_media, archive.storage, instances, config.aet,
                                           keep_syntax)
            await asyncio.to_thread(_write_with_progress, plan, dest, fmt)
            for s in plan.studies:
                trail.record(AuditEvent(
                    action=Action.EXPORT, user=_user(), patient_id=s.patient_id,
                    study_uid=s.study_uid,
                    detail=f"portable media ({fmt}) to {dest}: {s.instances} instance(s)"))
        finally:
            await trail.stop()
            await close_archive(archive)
    finally:
        lock.close()
    return (f"exported {plan.instances} instance(s) of {len(plan.studies)} study(ies) to"
            f" {dest} ({fmt}, {_size(dest)} bytes; {plan.transcoded} transcoded to Explicit"
            " VR Little Endian)")


def _user() -> str:
    with contextlib.suppress(KeyError, OSError):
        return f"{os.getlogin()} (command line)"
    return "command line"


def _write_with_progress(plan: MediaPlan, dest: Path, fmt: str) -> None:
    progress = progress_bar("exporting")
    with progress:
        task = progress.add_task("export", total=len(plan.entries))

        def step() -> None:
            progress.advance(task)

        if fmt == "folder":
            write_folder(plan, dest, step)
        elif fmt == "iso":
            write_iso(plan, dest, progress=step)
        else:
            partial = dest.with_name(dest.name + ".part")
            try:
                with partial.open("wb") as fh:
                    write_zip(plan, fh, step)
                os.replace(partial, dest)
            finally:
                partial.unlink(missing_ok=True)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _request(url: str, data: object = None, headers: dict[str, str] | None = None
             ) -> urllib.request.Request:
    request = urllib.request.Request(url, data=data, headers=headers or {})  # type: ignore[arg-type]
    if os.environ.get("PACSMESH_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['PACSMESH_TOKEN']}")
    return request


def _export_through_node(config: NodeConfig, studies: list[str], patient: str | None,
                         dest: Path, fmt: str, keep_syntax: bool) -> str:
    query = [("study", s) for s in studies] + ([("patient", patient)] if patient else [])
    query += [("format", "iso" if fmt == "iso" else "zip")]
    if keep_syntax:
        query.append(("keep_syntax", "1"))
    url, context = local_url(config, "/api/media?" + urllib.parse.urlencode(query))
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(_request(url), timeout=600, context=context) as rsp, \
                partial.open("wb") as fh:
            shutil.copyfileobj(rsp, fh, CHUNK)
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        _fail(f"the running node refused: {exc.code} {exc.read().decode(errors='replace')}"
              .strip())
    except OSError as exc:
        partial.unlink(missing_ok=True)
        _fail(f"the running node at {url} did not give the medium: {exc}", code=1)
    try:
        if fmt == "folder":
            with zipfile.ZipFile(partial) as zf:
                zf.extractall(dest)  # the node's own zip; extractall keeps names inside
        else:
            os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return f"exported to {dest} ({fmt}, {_size(dest)} bytes) by the running node"


async def import_media(config: NodeConfig, paths: list[Path]) -> list[tuple[Path, MediaCounts]]:
    """Each medium into the data dir (the node stopped). Raises MediaError for a medium
    refused whole (nothing of it stored), StartupError, StorageError."""
    lock = lock_data_dir(config.data_dir, config.data_dir_gid)
    out = []
    try:
        archive, _ = await open_archive(config.data_dir, open_storage(config))
        try:
            for path in paths:
                medium = await asyncio.to_thread(open_medium, path)
                try:
                    out.append((path, await _import_one(archive, medium)))
                finally:
                    medium.close()
        finally:
            await close_archive(archive)
    finally:
        lock.close()
    return out


async def _import_one(archive: Archive, medium: Medium) -> MediaCounts:
    progress = progress_bar("importing")
    with progress:
        task = progress.add_task("import", total=None)

        def step(total: int) -> None:
            if total:
                progress.update(task, total=total)
            else:
                progress.advance(task)

        return await asyncio.to_thread(import_medium, archive, medium, "IMPORT", step)


def report(path: Path, counts: MediaCounts) -> None:
    click.echo(f"{path}: {counts.line()}")
    for name in counts.missing:
        err.print(f"missing: {path}: {name} (named by the DICOMDIR)", markup=False,
                  highlight=False, soft_wrap=True)
    for line in counts.problems:
        err.print(f"unreadable: {path}: {line}", markup=False, highlight=False,
                  soft_wrap=True)


def import_to_node(url: str, paths: list[Path]) -> bool:
    """Send each path to a running node's ``POST /api/media`` (a zip or ISO as it is; a
    folder or a file zipped on the way). Returns whether all were taken whole."""
    whole = True
    for path in paths:
        with tempfile.TemporaryDirectory(prefix="pacsmesh-import-") as scratch:
            body = path if _is_image(path) else _zip_of(path, Path(scratch) / "medium.zip")
            size = body.stat().st_size
            try:
                with body.open("rb") as fh, urllib.request.urlopen(_request(
                        url.rstrip("/") + "/api/media", data=fh,
                        headers={"Content-Type": "application/octet-stream",
                                 "Content-Length": str(size)}), timeout=3600) as rsp:
                    answer = json.loads(rsp.read())
            except urllib.error.HTTPError as exc:
                _fail(f"{path}: the node refused it: {exc.code} "
                      f"{exc.read().decode(errors='replace').strip()}")
            except (OSError, ValueError) as exc:
                _fail(f"{path}: no answer from {url}: {exc}", code=1)
        counts = MediaCounts(**{k: answer[k] for k in (
            "stored", "duplicate", "conflict", "unreadable", "skipped", "tombstoned",
            "problems")}, missing=answer["missing_files"])
        report(path, counts)
        whole = whole and not (counts.unreadable or counts.missing)
    return whole


def _is_image(path: Path) -> bool:
    return path.is_file() and is_medium(path)


def _zip_of(path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                zf.write(file, file.relative_to(path).as_posix())
        else:
            zf.write(path, path.name)
    return dest


def exit_unless(ok: bool) -> None:
    if not ok:
        sys.exit(1)
