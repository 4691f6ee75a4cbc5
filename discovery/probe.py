"""Requests one member makes of another over the mesh API (HTTPS, mutual TLS).

Who answers is settled by the TLS context a call is made with: one that trusts a single
member's certificate proves the server is that member (see ``discovery.tls``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

HELLO_PATH = "/mesh/hello"
ROSTER_PATH = "/mesh/roster"
JOIN_PATH = "/mesh/join"


class ProbeFailed(ConnectionError):
    """Nothing answered, or something that is not a PACSmesh member of our mesh."""


class Refused(ProbeFailed):
    """The peer answered, with an HTTP error status."""

    def __init__(self, status: int, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail  # the body of the answer (its first 200 characters)


@dataclass(frozen=True)
class Hello:
    node_id: str
    aet: str
    mesh_hash: str
    mesh_port: int
    dicom_port: int
    roster_digest: str = ""
    peers: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Hello:
        try:
            peers = tuple(p for p in data.get("peers", []) if isinstance(p, dict))
            return cls(
                node_id=str(data["node_id"]), aet=str(data.get("aet", "")),
                mesh_hash=str(data["mesh"]), mesh_port=int(data["mesh_port"]),
                dicom_port=int(data.get("dicom_port", 0)),
                roster_digest=str(data.get("roster", "")), peers=peers,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProbeFailed(f"not a PACSmesh hello: {exc}") from None


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
