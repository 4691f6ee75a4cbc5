"""Portable media over HTTP: a study (or several, or a patient's) as a zip or ISO image
(reader), and a zip or ISO image taken in through the one ingest (uploader)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

from aiohttp import web

from node.archive import Archive, IngestResult
from node.audit import Action, AuditEvent, AuditTrail, Outcome, store_outcome
from node.dicom.retrieve_scp import MeshSource
from node.http.auth import USER_KEY
from node.http.body import BodyRefused, receive_body
from node.index import IndexFailure
from node.media.dicomdir import MediaError
from node.media.export import MediaPlan, plan_media
from node.media.import_media import import_medium
from node.media.medium import medium_from_file
from node.media.select import NotFetched, NotFound, select_instances
from node.media.writers import write_iso, write_zip
from node.storage import StorageError, StorageFull

log = logging.getLogger(__name__)
CHUNK = 2**20
_TYPES = {"zip": "application/zip", "iso": "application/x-iso9660-image"}


class _ResponseSink(io.RawIOBase):  # a RawIOBase, as io.BufferedWriter wants
    """A file the zip writer (on a worker thread) writes into: each write is sent on
    the loop and waited for, so the answer streams at the client's pace."""

    def __init__(self, response: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self.response, self.loop = response, loop

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        asyncio.run_coroutine_threadsafe(self.response.write(chunk), self.loop).result()
        return len(chunk)


def routes(archive: Archive, trail: AuditTrail, mesh: MeshSource | None, made_by: str,
           max_body: int) -> list[web.RouteDef]:
    def refuse(status: type[web.HTTPException], reason: str) -> web.HTTPException:
        return status(text=reason + "\n")

    async def one_study(request: web.Request) -> web.StreamResponse:
        return await export(request, [request.match_info["study_uid"]], None)

    async def several(request: web.Request) -> web.StreamResponse:
        studies = request.query.getall("study", [])
        patient = request.query.get("patient")
        if not studies and patient is None:
            raise refuse(web.HTTPBadRequest, "name a study (study=UID) or a patient"
                         " (patient=ID)")
        return await export(request, studies, patient)

    async def export(request: web.Request, studies: list[str],
                     patient: str | None) -> web.StreamResponse:
        fmt = request.query.get("format", "zip")
        if fmt not in _TYPES:
            raise refuse(web.HTTPBadRequest, f"format {fmt!r}: zip or iso")
        keep = request.query.get("keep_syntax", "") in ("1", "true", "yes")
        try:
            instances = await select_instances(archive.index, mesh, studies, patient)
            plan = await asyncio.to_thread(plan_media, archive.storage, instances, made_by,
                                           keep)
        except NotFound as exc:
            raise refuse(web.HTTPNotFound, str(exc)) from None
        except NotFetched as exc:
            raise refuse(web.HTTPServiceUnavailable, str(exc)) from None
        except MediaError as exc:
            raise refuse(web.HTTPUnprocessableEntity, str(exc)) from None
        except (StorageError, IndexFailure) as exc:
            log.error("media export failed: %s", exc)
            raise refuse(web.HTTPInternalServerError, "the archive could not read the"
                         " study") from None
        record_export(request, plan, fmt)
        try:
            if fmt == "zip":
                return await stream_zip(request, plan)
            return await send_iso(request, plan)
        finally:
            if mesh is not None:  # what was fetched for the medium is cache, as for C-GET
                await mesh.enforce_budget()

    def record_export(request: web.Request, plan: MediaPlan, fmt: str) -> None:
        for s in plan.studies:
            trail.record(AuditEvent(
                action=Action.EXPORT, user=str(request.get(USER_KEY, "")),
                address=request.remote or "", patient_id=s.patient_id,
                study_uid=s.study_uid,
                detail=f"portable media ({fmt}): {s.instances} instance(s)"))

    async def stream_zip(request: web.Request, plan: MediaPlan) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": _TYPES["zip"],
            "Content-Disposition": 'attachment; filename="DICOM.zip"'})
        await response.prepare(request)
        raw = _ResponseSink(response, asyncio.get_running_loop())
        sink = io.BufferedWriter(raw, CHUNK)  # type: ignore[type-var]  # typeshed: RawIO

        def run() -> None:
            write_zip(plan, sink)
            sink.flush()

        try:
            await asyncio.to_thread(run)
        except (MediaError, StorageError, ConnectionError) as exc:
            # Headers are gone: the only way to say "incomplete" is to cut the answer.
            log.error("media export cut short: %s", exc)
            response.force_close()
            return response
        await response.write_eof()
        return response

    async def send_iso(request: web.Request, plan: MediaPlan) -> web.StreamResponse:
        # pycdlib writes an image only to a seekable file. Not under the data dir's tmp/,
        # which start-up empties of files only.
        scratch = Path(tempfile.mkdtemp(prefix="pacsmesh-media-"))
        try:
            image = scratch / "DICOM.iso"
            try:
                await asyncio.to_thread(write_iso, plan, image)
            except (MediaError, StorageError, OSError) as exc:
                log.error("media export (iso) failed: %s", exc)
                raise refuse(web.HTTPInternalServerError, "the image could not be"
                             " made") from None
            response = web.StreamResponse(headers={
                "Content-Type": _TYPES["iso"],
                "Content-Disposition": 'attachment; filename="DICOM.iso"'})
            response.content_length = image.stat().st_size
            await response.prepare(request)
            with image.open("rb") as fh:
                while block := await asyncio.to_thread(fh.read, CHUNK):
                    await response.write(block)
            await response.write_eof()
            return response
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def take_medium(request: web.Request) -> web.Response:
        """POST a zip or ISO image as the body; every instance on it is ingested."""
        user = str(request.get(USER_KEY, ""))
        try:
            body = await receive_body(request, archive.storage, max_body)
        except BodyRefused as exc:
            raise exc.response from None

        def stored(result: IngestResult) -> None:
            trail.record(AuditEvent(
                action=Action.STORE, outcome=store_outcome(result.status), user=user,
                address=request.remote or "", patient_id=result.keys.patient_id,
                study_uid=result.keys.study_instance_uid, detail="portable media upload"))

        def run() -> dict[str, object]:
            with archive.storage.open_file(body.path, body.sha256) as fh:
                medium = medium_from_file(fh, "the uploaded medium")
                try:
                    return import_medium(archive, medium, "media", on_result=stored).as_json()
                finally:
                    medium.close()

        try:
            counts = await asyncio.to_thread(run)
        except MediaError as exc:
            trail.record(AuditEvent(
                action=Action.REFUSAL, outcome=Outcome.REFUSED, user=user,
                address=request.remote or "", detail=f"media upload: {exc}"))
            raise refuse(web.HTTPBadRequest, str(exc)) from None
        except StorageFull:
            raise refuse(web.HTTPInsufficientStorage, "archive storage is full") from None
        except (StorageError, IndexFailure) as exc:
            log.error("media upload failed: %s", exc)
            raise refuse(web.HTTPInternalServerError, "the archive could not store"
                         " it") from None
        finally:
            with contextlib.suppress(OSError):
                archive.storage.discard(body.path)
        return web.json_response(counts)

    return [web.get("/api/studies/{study_uid}/media", one_study),
            web.get("/api/media", several), web.post("/api/media", take_medium)]
