"""HTTP endpoints behind the roles: upload (uploader), the audit trail and tokens (admin)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from node.archive import Archive, IngestStatus
from node.audit import Action, AuditEvent, AuditTrail, Outcome, store_outcome
from node.dicom_header import InvalidDataset
from node.http.auth import USER_KEY
from node.http.body import BodyRefused, receive_body
from node.index import IndexFailure
from node.storage import StorageError, StorageFull

log = logging.getLogger(__name__)
MAX_UPLOAD = 2**30  # default limit: one instance; larger ones come by C-STORE


def routes(archive: Archive, trail: AuditTrail,
           max_body: int = MAX_UPLOAD) -> list[web.RouteDef]:
    """``max_body``: the largest upload accepted, in bytes (413 past it)."""
    async def upload(request: web.Request) -> web.Response:
        """POST one DICOM Part 10 file as the body."""
        user = str(request.get(USER_KEY, ""))

        def refuse(status: type[web.HTTPException], reason: str) -> web.HTTPException:
            record_refusal(reason)
            return status(text=reason + "\n")

        def record_refusal(reason: str) -> None:
            trail.record(AuditEvent(
                action=Action.REFUSAL, outcome=Outcome.REFUSED, user=user,
                address=request.remote or "", detail=f"HTTP upload: {reason}"))

        try:
            body = await receive_body(request, archive.storage, max_body)
        except BodyRefused as exc:
            record_refusal(exc.reason)
            raise exc.response from None
        try:
            # ingest_file deletes the temporary file whatever happens.
            result = await asyncio.to_thread(archive.ingest_file, body.path, body.sha256,
                                             "http")
        except InvalidDataset as exc:
            raise refuse(web.HTTPBadRequest, f"not a storable DICOM file: {exc}") from None
        except StorageFull:
            raise refuse(web.HTTPInsufficientStorage, "archive storage is full") from None
        except (StorageError, IndexFailure) as exc:
            log.error("HTTP upload failed: %s", exc)
            raise web.HTTPInternalServerError(text="the archive could not store it\n") from None
        keys = result.keys
        outcome = store_outcome(result.status)
        trail.record(AuditEvent(
            action=Action.STORE, outcome=outcome, user=user, address=request.remote or "",
            patient_id=keys.patient_id, study_uid=keys.study_instance_uid,
            detail="HTTP upload"))
        status = {IngestStatus.TOMBSTONED: 410, IngestStatus.CONFLICT: 409}.get(result.status,
                                                                                  200)
        return web.json_response({"status": result.status.value,
                                  "SOPInstanceUID": result.sop_instance_uid}, status=status)

    async def audit(request: web.Request) -> web.Response:
        await trail.flush()  # what just happened is in the answer
        return web.json_response(await archive.index.audit_rows(
            int(request.query.get("limit", "1000"))))

    async def list_tokens(request: web.Request) -> web.Response:
        return web.json_response(await archive.index.tokens())

    async def revoke(request: web.Request) -> web.Response:
        token_id = request.match_info["token_id"]
        if not await archive.index.revoke_token(token_id, token_id):
            raise web.HTTPNotFound(text=f"no live token {token_id}\n")
        return web.json_response({"revoked": token_id})

    return [web.post("/api/instances", upload), web.get("/api/audit", audit),
            web.get("/api/tokens", list_tokens), web.delete("/api/tokens/{token_id}", revoke)]
