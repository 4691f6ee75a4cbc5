"""The node's JSON API (aiohttp). Small on purpose: DICOMweb and the dashboard come later."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from node import __version__
from node.index import Index

INDEX_KEY: web.AppKey[Index] = web.AppKey("index", Index)
AET_KEY: web.AppKey[str] = web.AppKey("aet", str)
NODE_ID_KEY: web.AppKey[str] = web.AppKey("node_id", str)


class Backlog(Protocol):
    """What the node still owes other members (replication.outbox_store fills it in)."""

    async def outbox_summary(self) -> tuple[int, int]: ...


class _Nothing:
    async def outbox_summary(self) -> tuple[int, int]:
        return 0, 0


BACKLOG_KEY: web.AppKey[Backlog] = web.AppKey("backlog", Backlog)
StatusPart = Callable[[], Awaitable[dict[str, Any]]]
STATUS_PARTS_KEY: web.AppKey[list[StatusPart]] = web.AppKey("status_parts", list)


async def status(request: web.Request) -> web.Response:
    counts = await request.app[INDEX_KEY].counts()
    outbox_depth, under_replicated = await request.app[BACKLOG_KEY].outbox_summary()
    answer: dict[str, Any] = {
        "aet": request.app[AET_KEY],
        "node_id": request.app[NODE_ID_KEY],
        "version": __version__,
        "patients": counts.patients,
        "studies": counts.studies,
        "series": counts.series,
        "instances": counts.instances,
        "bytes": counts.bytes,
        # Copies still owed to owners, and how many studies they belong to.
        "outbox_depth": outbox_depth,
        "under_replicated": under_replicated,
    }
    for part in request.app[STATUS_PARTS_KEY]:  # e.g. replication's per-peer view
        answer.update(await part())
    return web.json_response(answer)


async def studies(request: web.Request) -> web.Response:
    rows = await request.app[INDEX_KEY].studies()
    return web.json_response([study_json(r) for r in rows])


def study_json(row: dict) -> dict:
    return {
        "StudyInstanceUID": row["study_uid"],
        "PatientID": row["patient_id"],
        "PatientName": row["patient_name"],
        "StudyDate": row["study_date"],
        "StudyTime": row["study_time"],
        "AccessionNumber": row["accession_number"],
        "StudyDescription": row["study_description"],
        "ModalitiesInStudy": [m for m in (row["modalities"] or "").split("\\") if m],
        "series": row["series_count"],
        "instances": row["instance_count"],
        "bytes": row["bytes"],
    }


def make_app(
    index: Index, aet: str, node_id: str, extra_routes: Iterable[web.RouteDef] = (),
    status_parts: Iterable[StatusPart] = (),
    middlewares: Iterable[Any] = (), backlog: Backlog | None = None,
) -> web.Application:
    """``status_parts`` add their keys to ``/api/status``; ``middlewares`` guard every
    route (node.http.auth); ``backlog`` counts the copies owed (none: a lone node)."""
    app = web.Application(middlewares=list(middlewares))
    app[STATUS_PARTS_KEY] = list(status_parts)
    app[INDEX_KEY] = index
    app[BACKLOG_KEY] = backlog or _Nothing()
    app[AET_KEY] = aet
    app[NODE_ID_KEY] = node_id
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/studies", studies)
    app.router.add_routes(list(extra_routes))
    return app
