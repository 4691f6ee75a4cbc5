"""Sends alerts as they are raised and cleared: to syslog and to a webhook (a JSON POST),
when configured. Each alert is sent once when it starts and once when it ends, not on every
evaluation."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from node.alerts.rules import Alert, Severity

log = logging.getLogger(__name__)
INTERVAL = 10.0  # s between evaluations


@dataclass(frozen=True)
class Targets:
    webhook: str | None = None  # URL that receives a JSON POST per change
    syslog: str | None = None  # "/dev/log", a socket path, or host:port (UDP)


def syslog_handler(target: str) -> logging.Handler:
    host, sep, port = target.rpartition(":")
    address: str | tuple[str, int] = (host, int(port)) if sep and port.isdigit() else target
    handler = logging.handlers.SysLogHandler(
        address=address, socktype=socket.SOCK_DGRAM if isinstance(address, tuple) else None)
    handler.ident = "pacsmesh: "
    return handler


class Notifier:
    def __init__(self, aet: str, targets: Targets,
                 current: Callable[[], Awaitable[list[Alert]]],
                 interval: float = INTERVAL) -> None:
        self.aet = aet
        self.targets = targets
        self._current = current
        self.interval = interval
        self._raised: dict[str, Alert] = {}
        self._task: asyncio.Task[None] | None = None
        self._syslog = logging.getLogger(f"pacsmesh.alerts.{id(self)}")
        self._syslog.propagate = False
        if targets.syslog:
            self._syslog.addHandler(syslog_handler(targets.syslog))

    @property
    def configured(self) -> bool:
        return bool(self.targets.webhook or self.targets.syslog)

    def start(self) -> None:
        if self.configured:
            self._task = asyncio.create_task(self._run(), name="alerts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for handler in list(self._syslog.handlers):
            handler.close()
            self._syslog.removeHandler(handler)

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                log.warning("alerts not sent: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.interval)

    async def check(self) -> None:
        """Evaluate once and send what changed since the last evaluation."""
        now = {a.key: a for a in await self._current()}
        raised = [a for k, a in now.items() if k not in self._raised]
        cleared = [a for k, a in self._raised.items() if k not in now]
        self._raised = now
        for alert in raised:
            await self._send(alert, "raised")
        for alert in cleared:
            await self._send(alert, "cleared")

    async def _send(self, alert: Alert, change: str) -> None:
        if self.targets.syslog:
            level = logging.CRITICAL if alert.severity is Severity.CRITICAL else logging.WARNING
            await asyncio.to_thread(self._syslog.log, level if change == "raised"
                                    else logging.INFO, "%s alert %s on %s: %s",
                                    alert.severity.value, change, self.aet, alert.message)
        if self.targets.webhook:
            body: dict[str, Any] = {"node": self.aet, "change": change, **alert.as_json()}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                    s.post(self.targets.webhook, json=body) as rsp:
                if rsp.status >= 300:
                    log.warning("alert webhook answered %d", rsp.status)
