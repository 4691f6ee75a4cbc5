"""C-FIND at IMAGE level for studies held elsewhere: asked of a live holder.

The catalog answers PATIENT, STUDY and SERIES levels alone. Image-level keys are asked
of a member holding the study (``POST /mesh/find``, members only), which answers from
its own holdings with the same matcher; the catalog's copy of those keys is the answer
only when no holder can be reached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from pydicom.dataset import Dataset

from discovery.probe import ProbeFailed
from discovery.service import Discovery
from node.index import Index
from node.query import Query, QueryError, parse_identifier
from replication.catalog_store import CatalogStore
from replication.errors import RemoteAnswerInvalid
from replication.wire import FIND_PATH, FindAnswer, FindRequest

log = logging.getLogger(__name__)
FIND_SECONDS = 30.0


def routes(index: Index) -> list[web.RouteDef]:
    async def find(request: web.Request) -> web.Response:
        try:
            ask = FindRequest.from_json(await request.json())
            query = parse_identifier(ask.identifier, ask.root)
        except (QueryError, RemoteAnswerInvalid, json.JSONDecodeError, UnicodeDecodeError) \
                as exc:
            raise web.HTTPBadRequest(text=f"query not understood: {exc}") from None
        rows = await index.find(query)
        log.info("C-FIND for member %s at %s level: %d match(es)",
                 request["peer"][:15], query.level, len(rows))
        return web.json_response(FindAnswer(tuple(rows)).to_json())

    return [web.post(FIND_PATH, find)]


async def image_rows(
    index: Index, discovery: Discovery, rank: Callable[[Iterable[str]], list[str]],
    query: Query, identifier: Dataset, root: str,
) -> list[dict[str, Any]]:
    """IMAGE-level rows over the mesh: this node's, then each other study's from a holder."""
    rows = await index.find(query)
    seen = {r["SOPInstanceUID"] for r in rows}
    remote = sorted({i.study_uid for i in await index.instances_for(query, mesh=True)
                     if not i.local})
    for study in remote:
        narrowed = Dataset()
        narrowed.update(identifier)
        narrowed.StudyInstanceUID = study
        answer = await _ask_holders(index, discovery, rank, study, narrowed, root)
        if answer is None:
            log.warning("no holder of a study answered an IMAGE-level C-FIND: catalog used")
            answer = await index.find(parse_identifier(narrowed, root), mesh=True)
        for row in answer:
            if row.get("SOPInstanceUID") not in seen:
                seen.add(row.get("SOPInstanceUID"))
                rows.append(row)
    return rows


async def _ask_holders(
    index: Index, discovery: Discovery, rank: Callable[[Iterable[str]], list[str]],
    study: str, identifier: Dataset, root: str,
) -> list[dict[str, Any]] | None:
    body = FindRequest(identifier, root).to_json()
    for holder in rank(await CatalogStore(index.db).study_holders(study)):
        try:
            answer = await discovery.ask_member(holder, "POST", FIND_PATH, body=body,
                                                seconds=FIND_SECONDS)
            return list(FindAnswer.from_json(answer).rows)
        except (ProbeFailed, RemoteAnswerInvalid) as exc:
            log.info("IMAGE-level C-FIND at %s failed: %s", holder[:15], exc)
    return None
