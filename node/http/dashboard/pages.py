"""The dashboard's HTML: one page with every section server-rendered, and each section
alone as a fragment the page's script fetches again every few seconds (short polling), so
the page stays live without a reload. Jinja2 escapes every value (patient names too)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from pydicom import Dataset

from node.alerts.rules import AlertCenter
from node.audit import AuditTrail
from node.health import HealthSource
from node.http.auth import USER_KEY
from node.http.dashboard.history import History, Sample, sparkline
from node.http.dashboard.picture import SIZE, layout
from node.index import Index
from node.query import QueryError, parse_identifier

HERE = Path(__file__).parent
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
LIVE = ("mesh", "replication", "alerts")  # the sections the page refreshes
AUDIT_PATH = "/dashboard/audit"  # admin only (node/http/auth.py ADMIN_PATHS)
STUDY_LIMIT = 100
AUDIT_SCAN = 5000  # newest rows the audit filters look through


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _utc(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(ago=_ago, utc=_utc, size=_size)
    return env


def is_admin(request: web.Request) -> bool:
    """The role the auth middleware found: "" when http_auth is none (all open)."""
    user = str(request.get(USER_KEY, ""))
    return user == "" or user.endswith("(admin)")


class Dashboard:
    def __init__(self, health: HealthSource, alerts: AlertCenter, index: Index,
                 trail: AuditTrail | None = None) -> None:
        self.health = health
        self.trail = trail
        self.alerts = alerts
        self.index = index
        self.history = History()
        self.env = environment()

    async def _context(self) -> dict[str, Any]:
        h = await self.health.gather()
        self.history.add(Sample(h.at, sum(d.bytes_per_second for d in h.mesh.debts),
                                h.mesh.copies_owed))
        onsets = self.alerts.study_onsets()
        under = sorted(h.mesh.under_replicated, key=lambda u: onsets.get(u.study_uid, h.at))
        holders = {u.study_uid: await self.health.view.holders(u.study_uid)
                   for u in under[:20]}
        return {"h": h, "alerts": self.alerts.current(h), "dots": layout(list(h.mesh.members)),
                "size": SIZE, "under": under, "onsets": onsets, "holders": holders,
                "spark": sparkline(self.history.samples(), h.at), "now": h.at}

    def _render(self, template: str, **context: Any) -> web.Response:
        html = self.env.get_template(template).render(**context)
        return web.Response(text=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def page(self, request: web.Request) -> web.Response:
        ctx = await self._context()
        return self._render("page.html", **ctx, live=LIVE, admin=is_admin(request),
                            studies=await self._studies(request), q=request.query)

    async def live(self, request: web.Request) -> web.Response:
        """Every live section at once, from one snapshot: what the page polls."""
        ctx = await self._context()
        parts = {name: self.env.get_template(f"{name}.html").render(**ctx) for name in LIVE}
        return web.json_response(parts, headers={"Cache-Control": "no-store"})

    async def part(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "studies":
            return self._render("studies.html", studies=await self._studies(request),
                                q=request.query)
        if name not in LIVE:
            raise web.HTTPNotFound(text=f"no dashboard section {name!r}\n")
        return self._render(f"{name}.html", **await self._context())

    async def _studies(self, request: web.Request) -> list[dict[str, Any]]:
        q = request.query
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        # Matching as C-FIND does it (node/query.py): "*" wildcards, date ranges.
        name = q.get("patient", "").strip()
        ds.PatientName = f"*{name}*" if name and "*" not in name else name
        ds.PatientID = ""
        ds.StudyDate = q.get("date", "").strip()
        ds.ModalitiesInStudy = q.get("modality", "").strip().upper()
        ds.AccessionNumber = q.get("accession", "").strip()
        ds.StudyInstanceUID = ""
        ds.StudyDescription = ""
        ds.NumberOfStudyRelatedInstances = ""
        try:
            rows = await self.index.find(parse_identifier(ds, "STUDY"), mesh=True)
        except QueryError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        rows = rows[:STUDY_LIMIT]
        for row in rows:
            row["holders"] = await self.health.view.holders(row["StudyInstanceUID"])
        return rows

    async def audit(self, request: web.Request) -> web.Response:
        q = request.query
        if self.trail is not None:
            await self.trail.flush()  # what just happened is in the answer
        rows = await self.index.audit_rows(AUDIT_SCAN)
        wanted = {k: q.get(k, "").strip() for k in
                  ("user", "patient_id", "study_uid", "action", "outcome")}
        since = q.get("since", "").strip()
        try:
            after = datetime.fromisoformat(since).timestamp() if since else None
        except ValueError:
            raise web.HTTPBadRequest(text="since must be an ISO 8601 date or time\n") from None

        def keep(row: dict[str, Any]) -> bool:
            who = f"{row.get('user', '')} {row.get('calling_aet', '')}"
            return (all(not v or (v.lower() in who.lower() if k == "user"
                                  else str(row.get(k, "")) == v) for k, v in wanted.items())
                    and (after is None or float(row["at"]) >= after))

        shown = [r for r in reversed(rows) if keep(r)][:500]
        return self._render("audit.html", rows=shown, q=q)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        body = await asyncio.to_thread((HERE / "static" / name).read_bytes)
        return web.Response(body=body, content_type=STATIC[name],
                            headers={"Cache-Control": "max-age=300"})

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/dashboard", self.page),
                web.get("/dashboard/live", self.live),
                web.get("/dashboard/part/{name}", self.part),
                web.get(AUDIT_PATH, self.audit),
                web.get("/dashboard/static/{name}", self.static)]


