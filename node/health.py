"""Gathers a :class:`node.mesh_view.Health` snapshot: the index's counts, the data dir's
file system, the quarantine, certificate expiry, and the mesh through its seam."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography import x509

from node import __version__
from node.index import Index
from node.mesh_view import Certificate, Health, MeshView, NoMesh


class CertificateError(ValueError):
    """A configured certificate file cannot be read as PEM X.509."""


def certificate_expiry(what: str, path: Path) -> Certificate:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CertificateError(f"{what} {path}: {exc}") from None
    return Certificate(what, cert.not_valid_after_utc.timestamp())


class HealthSource:
    def __init__(
        self, index: Index, data_dir: Path, quarantine: Path, aet: str, node_id: str,
        view: MeshView | None = None, certificates: Iterable[Certificate] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self.data_dir = data_dir
        self.quarantine = quarantine
        self.aet = aet
        self.node_id = node_id
        self.view: MeshView = view or NoMesh()
        self.certificates = tuple(certificates)
        self.clock = clock

    def _disk(self) -> tuple[int, int, int]:
        usage = shutil.disk_usage(self.data_dir)
        quarantined = sum(1 for _ in self.quarantine.glob("*")) if self.quarantine.is_dir() \
            else 0
        return usage.free, usage.total, quarantined

    async def own_facts(self) -> dict[str, Any]:
        """What this node tells members about itself (no patient data)."""
        counts = await self.index.counts()
        free, _, _ = await asyncio.to_thread(self._disk)
        return {"version": __version__, "studies": counts.studies,
                "stored_bytes": counts.bytes, "disk_free": free}

    async def gather(self) -> Health:
        counts = await self.index.counts()
        free, total, quarantined = await asyncio.to_thread(self._disk)
        return Health(
            aet=self.aet, node_id=self.node_id, version=__version__, at=self.clock(),
            studies=counts.studies, instances=counts.instances, stored_bytes=counts.bytes,
            disk_free=free, disk_total=total, quarantined=quarantined,
            mesh=await self.view.snapshot(), certificates=self.certificates,
        )
