"""Bearer tokens with roles on the HTTP API, and an audit row for every request.

``http_auth``: ``tokens`` asks every request for a token; ``none`` asks none (a node
behind its own gateway); ``auto`` (default) asks once any token exists, and until then
lets only loopback read, so an install upgraded in place keeps its local scripts and
``pacsmesh status`` working and is never open to the network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from node import tokens
from node.audit import Action, AuditEvent, AuditTrail, Outcome
from node.index import Index

READ, UPLOAD, ADMIN = "reader", "uploader", "admin"
UPLOAD_PATHS = ("/api/instances", "/api/media")
STOW_PATH = "/dicom-web/studies"  # STOW-RS: POST here or under one study
ADMIN_PATHS = ("/api/audit", "/api/tokens", "/dashboard/audit")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER_KEY = "pacsmesh_user"


def required_role(method: str, path: str) -> str:
    if method == "POST" and (path in UPLOAD_PATHS or path == STOW_PATH
                             or (path.startswith(STOW_PATH + "/") and path.count("/") == 3)):
        return UPLOAD
    if method not in ("GET", "HEAD") or path.startswith(ADMIN_PATHS):
        return ADMIN
    return READ


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def middleware(index: Index, mode: str, trail: AuditTrail | None) -> Callable[..., object]:
    def audit(request: web.Request, user: str, outcome: Outcome, detail: str) -> None:
        if trail is not None:
            trail.record(AuditEvent(
                action=Action.LOGIN if outcome is Outcome.SUCCESS else Action.REFUSAL,
                outcome=outcome, user=user, address=request.remote or "",
                study_uid=request.match_info.get("study_uid", ""),
                detail=f"{request.method} {request.path}: {detail}"))

    def refuse(request: web.Request, user: str, status: type[web.HTTPException],
               why: str) -> web.HTTPException:
        audit(request, user, Outcome.REFUSED, why)
        headers = {"WWW-Authenticate": 'Bearer realm="pacsmesh"'} if status is \
            web.HTTPUnauthorized else None
        return status(text=why + "\n", headers=headers)

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        needed = required_role(request.method, request.path)
        token = _bearer(request)
        if mode == "none":
            user = ""
        elif token is None:
            open_locally = (mode == "auto" and needed == READ and _is_loopback(request.remote)
                            and not await index.has_tokens())
            if not open_locally:
                raise refuse(request, "", web.HTTPUnauthorized,
                             "a bearer token is needed (pacsmesh token add)")
            user = "loopback"
        else:
            found = await index.token_role(tokens.digest(token))
            if found is None:
                raise refuse(request, "", web.HTTPUnauthorized, "unknown or revoked token")
            role, name = found
            user = f"{name or tokens.token_id(tokens.digest(token))} ({role})"
            if not tokens.may(role, needed):
                raise refuse(request, user, web.HTTPForbidden, f"the {needed} role is needed")
        request[USER_KEY] = user
        response = await handler(request)
        audit(request, user, Outcome.SUCCESS, str(response.status))
        return response

    return check
