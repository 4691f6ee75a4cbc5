"""Assembles what watches the node: its metrics registry, the health snapshot source,
the alert center and the notifier, from the configuration and the mesh seam."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from node.alerts.notify import Notifier, Targets
from node.alerts.rules import AlertCenter
from node.archive import Archive
from node.audit import AuditTrail
from node.config import NodeConfig
from node.datadir import StartupError
from node.health import CertificateError, HealthSource, certificate_expiry
from node.http.dashboard.pages import Dashboard
from node.http.monitoring import Monitoring
from node.mesh_view import Certificate, MeshView
from node.metrics import NodeMetrics
from node.tasks import cancel_and_wait

REFRESH_INTERVAL = 5.0  # s between asking the members what they report of themselves


@dataclass
class Observability:
    metrics: NodeMetrics
    monitoring: Monitoring
    notifier: Notifier
    dashboard: Dashboard
    health: HealthSource
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.notifier.start()
        self._task = asyncio.create_task(self._refresh(), name="member-reports")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.notifier.stop()

    async def _refresh(self) -> None:
        while True:
            await self.health.view.refresh()
            await asyncio.sleep(REFRESH_INTERVAL)

    def routes(self) -> list[web.RouteDef]:
        return [*self.monitoring.routes(), *self.dashboard.routes()]


def certificates(cfg: NodeConfig, node_cert: Path) -> list[Certificate]:
    """The certificates this node presents, each once."""
    named: dict[Path, str] = {node_cert: "node certificate"}
    if cfg.http_tls == "on" and cfg.http_tls_cert is not None:
        named.setdefault(cfg.http_tls_cert, "HTTPS certificate")
    if cfg.dicom_tls and cfg.dicom_tls_cert is not None:
        named.setdefault(cfg.dicom_tls_cert, "DICOM TLS certificate")
    try:
        return [certificate_expiry(what, path) for path, what in named.items()]
    except CertificateError as exc:
        raise StartupError(str(exc)) from None


def assemble(cfg: NodeConfig, archive: Archive, node_id: str, view: MeshView,
             node_cert: Path, audit: AuditTrail) -> Observability:
    metrics = NodeMetrics()
    health = HealthSource(archive.index, cfg.data_dir, archive.storage.quarantine, cfg.aet,
                          node_id, view, certificates(cfg, node_cert))
    alerts = AlertCenter(cfg.alerts.thresholds)
    monitoring = Monitoring(health, metrics, alerts)
    notifier = Notifier(cfg.aet, Targets(cfg.alerts.webhook, cfg.alerts.syslog),
                        monitoring.current_alerts)
    return Observability(metrics, monitoring, notifier,
                         Dashboard(health, alerts, archive.index, audit), health)
