"""Anti-entropy between members: find the copies an owner lacks, and queue them.

Each member answers, for the instances it holds and owns, bucket digests and (per
bucket) instance lists. A peer compares them with what it holds for that owner and
queues the missing copies in its outbox. Only ever adds: absence deletes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from discovery.service import Discovery
from node.index import Index
from replication.digest import Held, bucket_digests, bucket_of, differing_buckets
from replication.errors import RemoteAnswerInvalid
from replication.placement import owners
from replication.wire import DIGEST_PATH, HOLDINGS_PATH, Digest, Holdings, bucket_param

log = logging.getLogger(__name__)


async def owned_by(index: Index, node_id: str, members: list[str], replicas: int) -> list[Held]:
    """What this node holds that ``node_id`` should hold too."""
    return [
        Held(study, sop, sha) for study, sop, sha in await index.holdings()
        if node_id in owners(study, members, replicas)
    ]


def routes(index: Index, discovery: Discovery, replicas: Callable[[], int]) -> list[web.RouteDef]:
    async def mine() -> list[Held]:
        return await owned_by(index, discovery.node_id, discovery.members(), replicas())

    async def digest(request: web.Request) -> web.Response:
        return web.json_response(Digest(bucket_digests(await mine())).to_json())

    async def holdings(request: web.Request) -> web.Response:
        try:
            bucket = bucket_param(request.query)
        except RemoteAnswerInvalid:
            raise web.HTTPBadRequest(text="bucket must be given as a number") from None
        held = {h.sop_uid: h.sha256 for h in await mine() if bucket_of(h.study_uid) == bucket}
        return web.json_response(Holdings(held).to_json())

    return [web.get(DIGEST_PATH, digest), web.get(HOLDINGS_PATH, holdings)]


async def missing_at(
    index: Index, discovery: Discovery, peer: str, replicas: int
) -> list[tuple[str, str, str, str]]:
    """Outbox rows for the copies ``peer`` owns, we hold, and it lacks. Raises
    ProbeFailed, and RemoteAnswerInvalid for an answer of the wrong shape."""
    ours = await owned_by(index, peer, discovery.members(), replicas)
    if not ours:
        return []
    theirs = Digest.from_json(await discovery.ask_member(peer, "GET", DIGEST_PATH))
    differing = differing_buckets(bucket_digests(ours), theirs.buckets)
    rows = []
    for bucket in differing:
        mine = [h for h in ours if bucket_of(h.study_uid) == bucket]
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
