"""STOW-RS (PS3.18 10.5): a multipart/related body of Part 10 files, each stored through
the same ingest as C-STORE and the HTTP upload (node.archive), answered with the
Referenced and Failed SOP Sequences in DICOM JSON.

The body is received whole (node.http.body) and split before anything is stored, so a
malformed or cut-off body stores nothing at all.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web
from pydicom.dataset import Dataset

from node.archive import IngestStatus
from node.audit import Action, Outcome, store_outcome
from node.dicom_header import InvalidDataset, read_keys
from node.http.body import BodyRefused, receive_body
from node.http.dicomweb.context import PREFIX, DicomWeb, json_answer, media_type, refusal
from node.http.dicomweb.dicom_json import to_json
from node.http.dicomweb.multipart import MultipartError, Part, parse
from node.index import IndexFailure
from node.storage import StorageError, StorageFull

log = logging.getLogger(__name__)
DICOM = "application/dicom"
# Failure reasons (PS3.4 Annex GG.4, PS3.18 Table 10.5.3-1).
PROCESSING_FAILURE = 0x0110
DUPLICATE_CONFLICT = 0x0111  # the UID is on record with other bytes; those are kept
OUT_OF_RESOURCES = 0xA700
STUDY_MISMATCH = 0xA900  # the instance is not of the study the path names
CANNOT_UNDERSTAND = 0xC000


@dataclass
class Outcomes:
    stored: list[Dataset]
    failed: list[Dataset]


def _reference(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def _failure(sop_class: str, sop_uid: str, reason: int) -> Dataset:
    item = _reference(sop_class, sop_uid)
    item.FailureReason = reason
    return item


async def _body_parts(context: DicomWeb, request: web.Request, boundary: str) -> list[Part]:
    """The body's parts; BodyRefused or MultipartError, and no file kept, otherwise."""
    storage = context.archive.storage
    body = await receive_body(request, storage, context.max_body)
    try:
        def read() -> bytes:
            with storage.open_file(body.path, body.sha256) as fh:
                return fh.read()  # the plaintext, for a body sealed at rest too
        return parse(await asyncio.to_thread(read), boundary)
    finally:
        await asyncio.to_thread(storage.discard, body.path)


def routes(context: DicomWeb) -> list[web.RouteDef]:
    async def store_one(request: web.Request, part: Part, study: str | None,
                        out: Outcomes) -> None:
        if part.content_type not in (DICOM, ""):
            out.failed.append(_failure("", "", CANNOT_UNDERSTAND))
            return
        try:
            keys = await asyncio.to_thread(read_keys, part.body)
        except InvalidDataset as exc:
            log.info("STOW-RS part refused: %s", exc)
            out.failed.append(_failure("", "", CANNOT_UNDERSTAND))
            return
        sop_class, sop_uid = keys.sop_class_uid, keys.sop_instance_uid
        if study is not None and keys.study_instance_uid != study:
            out.failed.append(_failure(sop_class, sop_uid, STUDY_MISMATCH))
            return
        try:
            result = await asyncio.to_thread(context.archive.ingest, part.body, "http")
        except InvalidDataset as exc:
            log.info("STOW-RS instance %s refused: %s", sop_uid, exc)
            out.failed.append(_failure(sop_class, sop_uid, CANNOT_UNDERSTAND))
            return
        except StorageFull:
            out.failed.append(_failure(sop_class, sop_uid, OUT_OF_RESOURCES))
            return
        except (StorageError, IndexFailure) as exc:
            log.error("STOW-RS instance %s not stored: %s", sop_uid, exc)
            out.failed.append(_failure(sop_class, sop_uid, PROCESSING_FAILURE))
            return
        context.record(request, Action.STORE, store_outcome(result.status),
                       f"STOW-RS {result.status.value}", patient_id=keys.patient_id,
                       study_uid=keys.study_instance_uid)
        if result.status in (IngestStatus.STORED, IngestStatus.DUPLICATE):
            item = _reference(sop_class, sop_uid)
            item.RetrieveURL = (f"{PREFIX}/studies/{keys.study_instance_uid}/series/"
                                f"{keys.series_instance_uid}/instances/{sop_uid}")
            out.stored.append(item)
        else:
            reason = (DUPLICATE_CONFLICT if result.status is IngestStatus.CONFLICT
                      else PROCESSING_FAILURE)  # a deleted study's: refused mesh-wide
            out.failed.append(_failure(sop_class, sop_uid, reason))

    async def stow(request: web.Request) -> web.Response:
        kind, params = media_type(request.headers.get("Content-Type", ""))
        part_type = params.get("type", DICOM).lower()
        if kind != "multipart/related" or part_type != DICOM:
            reason = ('STOW-RS takes multipart/related; type="application/dicom", not '
                      f"{request.headers.get('Content-Type') or 'no Content-Type'}")
            log.warning("%s", reason)
            context.record(request, Action.REFUSAL, Outcome.REFUSED, reason)
            raise refusal(web.HTTPUnsupportedMediaType, reason)
        try:
            parts = await _body_parts(context, request, params.get("boundary", ""))
        except BodyRefused as exc:
            context.record(request, Action.REFUSAL, Outcome.REFUSED, exc.reason)
            raise exc.response from None
        except MultipartError as exc:
            log.warning("STOW-RS body refused: %s", exc)
            context.record(request, Action.REFUSAL, Outcome.REFUSED, str(exc))
            raise refusal(web.HTTPBadRequest, f"malformed multipart body: {exc}") from None
        study = request.match_info.get("study")
        out = Outcomes([], [])
        for part in parts:
            await store_one(request, part, study, out)
        log.info("STOW-RS: %d stored, %d failed", len(out.stored), len(out.failed))
        answer = Dataset()
        if study is not None:
            answer.RetrieveURL = f"{PREFIX}/studies/{study}"
        if out.failed:
            answer.FailedSOPSequence = out.failed
        if out.stored:
            answer.ReferencedSOPSequence = out.stored
        status = 200 if not out.failed else 202 if out.stored else 409
        return json_answer(to_json(answer), status=status)

    return [web.post(f"{PREFIX}/studies", stow), web.post(f"{PREFIX}/studies/{{study}}", stow)]
