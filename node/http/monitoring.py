"""What operators' tools read: ``/metrics`` (Prometheus text format), ``/api/alerts``, an
``alerts`` part for ``/api/status``, and the middleware that times DICOMweb requests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from node.alerts.rules import Alert, AlertCenter
from node.health import HealthSource
from node.metrics import NodeMetrics

DICOMWEB_PATHS = ("/dicom-web/", "/wado")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Monitoring:
    def __init__(self, health: HealthSource, metrics: NodeMetrics, alerts: AlertCenter) -> None:
        self.health = health
        self.metrics = metrics
        self.alerts = alerts

    async def current_alerts(self) -> list[Alert]:
        return self.alerts.current(await self.health.gather())

    async def status_part(self) -> dict[str, Any]:
        return {"alerts": [a.as_json() for a in await self.current_alerts()]}

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.metrics.render(await self.health.gather())
        # CONTENT_TYPE_LATEST carries its own charset parameter.
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _alerts(self, request: web.Request) -> web.Response:
        return web.json_response(await self.status_part())

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self._metrics), web.get("/api/alerts", self._alerts)]

    def middleware(self) -> Callable[..., object]:
        web_metrics = self.metrics.web

        @web.middleware
        async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not request.path.startswith(DICOMWEB_PATHS):
                return await handler(request)
            start = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                web_metrics.observe(request.method, status, time.perf_counter() - start)

        return timed
