"""The mesh API's client: requests one member makes of another (HTTPS, mutual TLS).

Who answers is settled by the TLS context a call is made with: one that trusts a single
member's certificate proves the server is that member (see ``discovery.tls``). The
contexts live here, beside the one session they are used with.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any

import aiohttp

from discovery.errors import ProbeFailed, Refused
from discovery.roster import RosterView
from discovery.tls import client_context, member_context, trust
from node.identity import NodeIdentity


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


async def call(
    session: aiohttp.ClientSession, method: str, address: str, port: int, path: str,
    seconds: float, context: ssl.SSLContext, *, params: dict[str, str] | None = None,
    body: Any = None, data: bytes | AsyncIterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """One request over TLS made with ``context`` (a JSON ``body``, or raw ``data``: bytes
    or a stream of them); returns the JSON answer."""
    url = f"https://{url_host(address)}:{port}{path}"
    try:
        async with asyncio.timeout(seconds):
            async with session.request(
                method, url, params=params or {}, json=body, data=data, headers=headers,
                ssl=context,
            ) as rsp:
                if rsp.status != 200:
                    detail = (await rsp.text())[:200]
                    raise Refused(rsp.status, f"{url}: HTTP {rsp.status} {detail}", detail)
                return await rsp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        raise ProbeFailed(f"{url}: {type(exc).__name__}: {exc}") from None


async def stream(
    session: aiohttp.ClientSession, address: str, port: int, path: str, seconds: float,
    context: ssl.SSLContext, sink: Callable[[bytes], Awaitable[None]],
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """A GET whose body goes to ``sink`` a chunk at a time as it arrives (never whole in
    memory); returns the response headers."""
    url = f"https://{url_host(address)}:{port}{path}"
    try:
        async with asyncio.timeout(seconds):
            async with session.get(url, headers=headers, ssl=context) as rsp:
                if rsp.status != 200:
                    detail = (await rsp.text())[:200]
                    raise Refused(rsp.status, f"{url}: HTTP {rsp.status} {detail}", detail)
                async for chunk in rsp.content.iter_any():
                    await sink(chunk)
                return dict(rsp.headers)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        raise ProbeFailed(f"{url}: {type(exc).__name__}: {exc}") from None


class MeshClient:
    """One session for a member's requests, and the TLS contexts they are made with."""

    def __init__(self, identity: NodeIdentity, member_certs: Iterable[str],
                 view: Callable[[], RosterView | None]) -> None:
        self._identity = identity
        self._view = view
        self._any_member = client_context(identity, member_certs)
        self._member: dict[str, ssl.SSLContext] = {}  # exactly that member
        self.session = aiohttp.ClientSession()

    def trust(self, cert_pems: list[str]) -> None:
        """Members admitted since: any-member calls accept them too."""
        trust(self._any_member, cert_pems)

    def forget(self, node_id: str) -> None:
        """A revoked member: calls to it are made no more."""
        self._member.pop(node_id, None)

    def context_for(self, node_id: str | None) -> ssl.SSLContext:
        """A context proving the server is ``node_id``, or any member if None."""
        view = self._view()
        assert view is not None
        if node_id is None:
            return self._any_member
        member = view.members.get(node_id)
        if member is None or not view.is_member(node_id):
            raise ProbeFailed(f"{node_id[:15]} is not a member of our mesh")
        ctx = self._member.get(node_id)
        if ctx is None:
            ctx = self._member[node_id] = member_context(self._identity, member.cert_pem)
        return ctx

    async def call(
        self, method: str, address: str, port: int, path: str, seconds: float,
        node_id: str | None, **kwargs: Any,
    ) -> Any:
        """A request to ``node_id`` (or any member if None) at address:port."""
        return await call(self.session, method, address, port, path, seconds,
                          self.context_for(node_id), **kwargs)

    async def stream(
        self, address: str, port: int, path: str, seconds: float, node_id: str,
        sink: Callable[[bytes], Awaitable[None]], headers: dict[str, str] | None = None,
    ) -> dict[str, str]:
        return await stream(self.session, address, port, path, seconds,
                            self.context_for(node_id), sink, headers=headers)

    async def close(self) -> None:
        await self.session.close()
