"""The web viewer, given member to member: one node with the OHIF Viewer installed gives it
to a whole site without internet.

A member serves the npm tarball it installed from (node.viewer_bundle keeps it) on the mesh
API, members only; the receiver checks it against the pinned integrity hash exactly as a
tarball from npm, so a member can hand out the viewer but never other code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import aiohttp
from aiohttp import web

from discovery.errors import ProbeFailed
from discovery.mesh_client import stream
from discovery.tls import client_context
from node.identity import NodeIdentity
from node.viewer_bundle import ViewerInstallError, installed
from replication.errors import RemoteReplicationError

VIEWER_PATH = "/mesh/viewer"
VERSION_HEADER = "X-Viewer-Version"
FETCH_SECONDS = 600.0  # 50 MB over a slow site link


class ViewerNotFetched(RemoteReplicationError):
    """No member given could hand over its viewer."""


def routes(data_dir: Path) -> list[web.RouteDef]:
    async def viewer(request: web.Request) -> web.StreamResponse:
        try:
            here = installed(data_dir)
        except ViewerInstallError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None
        if here is None:
            raise web.HTTPNotFound(text="no viewer is installed on this member")
        return web.FileResponse(here.archive, headers={
            VERSION_HEADER: here.version, "Content-Type": "application/gzip"})

    return [web.get(VIEWER_PATH, viewer)]


async def fetch(identity: NodeIdentity, member_certs: list[str],
                endpoints: Iterable[tuple[str, int]], dest: Path) -> tuple[str, str]:
    """Write the first answering member's viewer tarball to ``dest``; returns
    (address:port, version it says). Only roster members are trusted as servers."""
    context = client_context(identity, member_certs)
    failures = []
    async with aiohttp.ClientSession() as session:
        for address, port in endpoints:
            try:
                with dest.open("wb") as out:
                    async def sink(chunk: bytes, out=out) -> None:
                        await asyncio.to_thread(out.write, chunk)
                    headers = await stream(session, address, port, VIEWER_PATH,
                                           FETCH_SECONDS, context, sink)
                return f"{address}:{port}", headers.get(VERSION_HEADER, "")
            except ProbeFailed as exc:
                failures.append(str(exc))
    raise ViewerNotFetched("no member handed over its viewer: " + ("; ".join(failures)
                                                                    or "no member known"))
