"""Browser login: a token, given once on a small page (or as a bearer header), exchanged for
an HttpOnly, SameSite=Strict session cookie; logout ends the session on the server too.

Scripts keep sending bearer tokens; node.http.auth accepts either.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from aiohttp import web

from node import tokens
from node.audit import Action, AuditEvent, AuditTrail, Outcome
from node.http.auth import SESSION_COOKIE, bearer, same_origin
from node.http.session_store import SessionStore
from node.index import Index

SESSION_LIFETIME = 12 * 3600.0  # one clinical shift: a borrowed laptop does not stay in
LOGIN_PATH = "/login"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PACSmesh: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;max-width:30em;margin:4em auto;padding:0 1em}}
input{{width:100%;padding:.5em;margin:.5em 0}}p.error{{color:#b00}}</style></head>
<body><h1>PACSmesh</h1>{error}
<form method="post" action="/api/session">
<label>Access token (from <code>pacsmesh token add --role reader</code>)
<input name="token" type="password" autocomplete="current-password" autofocus required>
</label><input type="hidden" name="next" value="{next}">
<input type="submit" value="Log in"></form></body></html>
"""


def local_next(target: str | None) -> str:
    """Where to go after login: a path on this node only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def login_page(target: str, error: str = "", status: int = 200) -> web.Response:
    shown = f'<p class="error">{html.escape(error)}</p>' if error else ""
    return web.Response(text=_PAGE.format(error=shown, next=html.escape(local_next(target))),
                        content_type="text/html", status=status,
                        headers={"Cache-Control": "no-store"})


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def login_url(path_qs: str) -> str:
    return f"{LOGIN_PATH}?next={quote(path_qs, safe='')}"


def routes(index: Index, sessions: SessionStore, trail: AuditTrail | None,
           lifetime: float = SESSION_LIFETIME) -> list[web.RouteDef]:
    def audit(request: web.Request, outcome: Outcome, user: str, detail: str) -> None:
        if trail is not None:
            trail.record(AuditEvent(
                action=Action.LOGIN if outcome is Outcome.SUCCESS else Action.REFUSAL,
                outcome=outcome, user=user, address=request.remote or "",
                detail=f"{request.method} {request.path}: {detail}"))

    async def page(request: web.Request) -> web.Response:
        return login_page(request.query.get("next", "/"))

    async def open_session(request: web.Request) -> web.Response:
        form = request.content_type == "application/x-www-form-urlencoded"
        fields = await request.post() if form else {}
        target = local_next(str(fields.get("next", "/")))
        if "Origin" in request.headers and not same_origin(request):
            audit(request, Outcome.REFUSED, "", "login from another site's page")
            raise web.HTTPForbidden(text="a login must come from this node's own page\n")
        token = bearer(request) or str(fields.get("token", "")).strip()
        found = await index.token_role(tokens.digest(token)) if token else None
        if found is None:
            audit(request, Outcome.REFUSED, "", "login with an unknown or revoked token")
            if form:
                return login_page(target, "Unknown or revoked token.", 401)
            raise web.HTTPUnauthorized(text="unknown or revoked token\n",
                                       headers={"WWW-Authenticate": 'Bearer realm="pacsmesh"'})
        role, name = found
        user = f"{name or tokens.token_id(tokens.digest(token))} ({role})"
        cookie = await sessions.open(tokens.digest(token), lifetime)
        audit(request, Outcome.SUCCESS, user, "session opened")
        response = _see_other(target) if form else web.json_response(
            {"role": role, "expires_in": lifetime})
        response.set_cookie(SESSION_COOKIE, cookie, max_age=int(lifetime), path="/",
                            httponly=True, samesite="Strict", secure=request.secure)
        return response

    async def close_session(request: web.Request) -> web.Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not same_origin(request):
            raise web.HTTPForbidden(text="a logout must come from this node's own pages "
                                         "(Origin header)\n")
        if cookie and await sessions.close(cookie):
            audit(request, Outcome.SUCCESS, "", "session closed")
        response = _see_other(LOGIN_PATH) if request.method == "POST" \
            else web.Response(status=204)
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    return [web.get(LOGIN_PATH, page), web.post("/api/session", open_session),
            web.delete("/api/session", close_session), web.post("/logout", close_session)]
