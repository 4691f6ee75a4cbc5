"""Who may make a request on the HTTP port: bearer tokens for scripts, a session cookie for
browsers (node.http.session), roles as tokens have them; an audit row for every request
that reaches patient data.

``http_auth``: ``tokens`` asks every request for a token; ``none`` asks none (a node
behind its own gateway); ``auto`` (default) asks once any token exists, and until then
lets only loopback read, so an install upgraded in place keeps its local scripts and
``pacsmesh status`` working and is never open to the network.

The viewer's own files (every GET outside the node's paths) and the login endpoints need no
token: they carry no patient data, and a browser must load them before it can log in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from node import tokens
from node.audit import Action, AuditEvent, AuditTrail, Outcome
from node.errors import NodeError
from node.http.session_store import SessionStore
from node.index import Index

READ, UPLOAD, ADMIN = "reader", "uploader", "admin"
UPLOAD_PATHS = ("/api/instances", "/api/media")
STOW_PATH = "/dicom-web/studies"  # STOW-RS: POST here or under one study
ADMIN_PATHS = ("/api/audit", "/api/tokens", "/dashboard/audit")
# The node's own paths: never the viewer's, never without a token or session.
NODE_PATHS = ("/api", "/dicom-web", "/wado", "/dashboard", "/metrics", "/install", "/mesh")
LOGIN_PATHS = ("/login", "/logout", "/api/session")  # they check what they are given
SESSION_COOKIE = "pacsmesh_session"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER_KEY = "pacsmesh_user"


def node_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in NODE_PATHS)


def required_role(method: str, path: str) -> str | None:
    """The role a request needs; None: anyone may make it."""
    if path in LOGIN_PATHS or (method in ("GET", "HEAD") and not node_path(path)):
        return None
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


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def same_origin(request: web.Request) -> bool:
    """The request's Origin header names this node as the browser reached it."""
    return request.headers.get("Origin") == f"{request.scheme}://{request.host}"


class Refusal(NodeError):
    """Why a request may not go on (turned into 401 or 403 by the middleware)."""

    def __init__(self, status: type[web.HTTPException], user: str, why: str) -> None:
        super().__init__(why)
        self.status, self.user, self.why = status, user, why


class Authenticator:
    def __init__(self, index: Index, mode: str, sessions: SessionStore) -> None:
        self.index, self.mode, self.sessions = index, mode, sessions

    async def user(self, request: web.Request, needed: str) -> str:
        """Who makes ``request``, if they may do what it needs; else :class:`Refusal`."""
        if self.mode == "none":
            return ""
        token = bearer(request)
        cookie = request.cookies.get(SESSION_COOKIE) if token is None else None
        if token is not None:
            token_digest = tokens.digest(token)
        elif cookie:
            found = await self.sessions.token_of(cookie)
            if found is None:
                raise Refusal(web.HTTPUnauthorized, "",
                              "the session has expired or ended: log in again at /login")
            # SameSite=Strict keeps other sites' requests from carrying the cookie; the
            # Origin check covers browsers that do not honour it.
            if request.method not in ("GET", "HEAD") and not same_origin(request):
                raise Refusal(web.HTTPForbidden, "",
                              "a request made with a session cookie must come from this "
                              "node's own pages (Origin header)")
            token_digest = found
        else:
            if (self.mode == "auto" and needed == READ and _is_loopback(request.remote)
                    and not await self.index.has_tokens()):
                return "loopback"
            raise Refusal(web.HTTPUnauthorized, "",
                          "a bearer token is needed (pacsmesh token add), or log in at /login")
        role_name = await self.index.token_role(token_digest)
        if role_name is None:
            raise Refusal(web.HTTPUnauthorized, "", "unknown or revoked token")
        role, name = role_name
        user = f"{name or tokens.token_id(token_digest)} ({role})"
        if not tokens.may(role, needed):
            raise Refusal(web.HTTPForbidden, user, f"the {needed} role is needed")
        return user

    async def may_read(self, request: web.Request) -> bool:
        try:
            await self.user(request, READ)
        except Refusal:
            return False
        return True


# The node's own pages a person opens in a browser (the viewer's pages lead to the login
# page themselves, node/http/viewer.py).
BROWSER_PAGES = ("/dashboard", "/dashboard/")


def _browser_page(request: web.Request) -> bool:
    return (request.method == "GET" and request.path in BROWSER_PAGES
            and "text/html" in request.headers.get("Accept", ""))


def middleware(authenticator: Authenticator, trail: AuditTrail | None) -> Callable[..., object]:
    def audit(request: web.Request, user: str, outcome: Outcome, detail: str) -> None:
        if trail is not None:
            trail.record(AuditEvent(
                action=Action.LOGIN if outcome is Outcome.SUCCESS else Action.REFUSAL,
                outcome=outcome, user=user, address=request.remote or "",
                study_uid=request.match_info.get("study_uid", ""),
                detail=f"{request.method} {request.path}: {detail}"))

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        needed = required_role(request.method, request.path)
        if needed is None:
            return await handler(request)
        try:
            user = await authenticator.user(request, needed)
        except Refusal as refusal:
            audit(request, refusal.user, Outcome.REFUSED, refusal.why)
            if refusal.status is web.HTTPUnauthorized and _browser_page(request):
                # A person at a browser, not a script: to the login page, and back here.
                raise web.HTTPSeeOther("/login?next=" + quote(request.path_qs, safe="")) from None
            headers = {"WWW-Authenticate": 'Bearer realm="pacsmesh"'} \
                if refusal.status is web.HTTPUnauthorized else None
            raise refusal.status(text=refusal.why + "\n", headers=headers) from None
        request[USER_KEY] = user
        response = await handler(request)
        audit(request, user, Outcome.SUCCESS, str(response.status))
        return response

    return check
