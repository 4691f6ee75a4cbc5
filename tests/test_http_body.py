"""node/http/body.py on a real socket: a body that stalls is refused with 408 once its
idle bound has passed, and nothing of it is kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from node.http.body import BodyRefused, receive_body
from node.storage import Storage
from tests.support import free_port

IDLE = 1.0


async def test_a_stalled_body_is_408_and_nothing_kept(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    storage.prepare()

    async def take(request: web.Request) -> web.Response:
        try:
            body = await receive_body(request, storage, 10**6, idle=IDLE)
        except BodyRefused as exc:
            raise exc.response from None
        return web.json_response({"sha256": body.sha256, "size": body.size})

    app = web.Application()
    app.router.add_post("/body", take)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                     + b"x" * 100)
        await writer.drain()
        started = time.monotonic()
        status = await asyncio.wait_for(reader.readline(), timeout=IDLE + 20)
        waited = time.monotonic() - started
        writer.close()
        assert status.startswith(b"HTTP/1.1 408"), status
        print("waited", waited)
        assert IDLE - 0.2 <= waited <= IDLE + 20
        assert list(storage.tmp.iterdir()) == []
        assert list(storage.objects.rglob("*.dcm")) == []
        assert list(storage.conflicts.iterdir()) == []
    finally:
        await runner.cleanup()
