"""Anti-entropy between members: find the copies an owner lacks, and queue them.

Each member answers, for the instances it holds and owns, bucket digests and (per
bucket) instance lists. A peer compares them with what it holds for that owner and
queues the missing copies in its outbox. Only ever adds: absence deletes nothing.
Both sides read what this node holds from :class:`replication.owned.OwnedIndex`, kept
current in proportion to what changed, not from every instance row each round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from discovery.service import Discovery
from replication.digest import differing_buckets
from replication.errors import RemoteAnswerInvalid
from replication.owned import OwnedIndex
from replication.wire import DIGEST_PATH, HOLDINGS_PATH, Digest, Holdings, bucket_param

log = logging.getLogger(__name__)


def routes(owned: OwnedIndex, discovery: Discovery,
           replicas: Callable[[], int]) -> list[web.RouteDef]:
    async def digest(request: web.Request) -> web.Response:
        ours = await owned.digests(discovery.node_id, discovery.members(), replicas())
        return web.json_response(Digest(ours).to_json())

    async def holdings(request: web.Request) -> web.Response:
        try:
            bucket = bucket_param(request.query)
        except RemoteAnswerInvalid:
            raise web.HTTPBadRequest(text="bucket must be given as a number") from None
        mine = await owned.bucket(discovery.node_id, discovery.members(), replicas(), bucket)
        return web.json_response(Holdings({h.sop_uid: h.sha256 for h in mine}).to_json())

    return [web.get(DIGEST_PATH, digest), web.get(HOLDINGS_PATH, holdings)]


async def missing_at(
    owned: OwnedIndex, discovery: Discovery, peer: str, replicas: int
) -> list[tuple[str, str, str, str]]:
    """Outbox rows for the copies ``peer`` owns, we hold, and it lacks. Raises
    ProbeFailed, and RemoteAnswerInvalid for an answer of the wrong shape."""
    members = discovery.members()
    ours = await owned.digests(peer, members, replicas)
    if not ours:
        return []
    theirs = Digest.from_json(await discovery.ask_member(peer, "GET", DIGEST_PATH))
    differing = differing_buckets(ours, theirs.buckets)
    rows = []
    for bucket in differing:
        mine = await owned.bucket(peer, members, replicas, bucket)
        if not mine:
            continue
        held = Holdings.from_json(await discovery.ask_member(
            peer, "GET", HOLDINGS_PATH, params={"bucket": str(bucket)})).held
        for h in mine:
            # Theirs missing, or different bytes there: ours is checked against its name,
            # so a copy that no longer matches its hash on their side gets replaced.
            if held.get(h.sop_uid) != h.sha256:
                rows.append((h.sop_uid, peer, h.study_uid, h.sha256))
    return rows
