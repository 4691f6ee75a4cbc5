"""Liveness probes: ask a peer's HTTP API who it is and whom it knows."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

HELLO_PATH = "/api/mesh/hello"


class ProbeFailed(ConnectionError):
    """Nothing answered, or something that is not a PACSmesh node of this protocol."""


@dataclass(frozen=True)
class Hello:
    node_id: str
    aet: str
    mesh_hash: str
    http_port: int
    dicom_port: int
    peers: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Hello:
        try:
            peers = tuple(p for p in data.get("peers", []) if isinstance(p, dict))
            return cls(
                node_id=str(data["node_id"]), aet=str(data.get("aet", "")),
                mesh_hash=str(data["mesh"]), http_port=int(data["http_port"]),
                dicom_port=int(data.get("dicom_port", 0)), peers=peers,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProbeFailed(f"not a PACSmesh hello: {exc}") from None


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


async def probe(
    session: aiohttp.ClientSession, address: str, port: int, seconds: float,
    introduce: dict[str, str] | None = None,
) -> Hello:
    """GET the peer's hello; ``introduce`` tells it who asks, so it learns of us too."""
    url = f"http://{url_host(address)}:{port}{HELLO_PATH}"
    try:
        async with asyncio.timeout(seconds):
            async with session.get(url, params=introduce or {}) as rsp:
                if rsp.status != 200:
                    raise ProbeFailed(f"{url}: HTTP {rsp.status}")
                return Hello.from_json(await rsp.json(content_type=None))
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        raise ProbeFailed(f"{url}: {type(exc).__name__}: {exc}") from None
