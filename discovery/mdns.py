"""mDNS announce and browse with python-zeroconf (the I/O edge of discovery).

Announces the node's DICOM record (PS3.15 Annex H) and its private mesh record, browses
both, and reports what it hears through callbacks. It decides nothing about liveness.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ifaddr
from zeroconf import (
    BadTypeInNameException,
    IPVersion,
    NonUniqueNameException,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from discovery.records import (
    DICOM_TYPE,
    MESH_TYPE,
    DicomRecord,
    MeshRecord,
    RecordError,
    decode_dicom,
    decode_mesh,
    dicom_instance_name,
    instance_label,
)

log = logging.getLogger(__name__)
RESOLVE_TIMEOUT_MS = 3000


def interface_addresses(names: Sequence[str] = ()) -> list[str]:
    """Non-loopback IPv4 addresses, of the named interfaces only if any are named."""
    found = []
    for adapter in ifaddr.get_adapters():
        if names and adapter.nice_name not in names:
            continue
        for ip in adapter.ips:
            if ip.is_IPv4 and not str(ip.ip).startswith("127."):
                found.append(str(ip.ip))
    return sorted(set(found))


@dataclass
class Announcement:
    dicom: DicomRecord
    mesh: MeshRecord | None  # only members announce the mesh record


class MdnsAgent:
    def __init__(
        self,
        announcement: Announcement,
        on_mesh: Callable[[MeshRecord], None],
        on_dicom: Callable[[str, DicomRecord], None],
        on_dicom_removed: Callable[[str], None],
        interfaces: Sequence[str] = (),
        host_label: str = "",
    ) -> None:
        """``host_label`` names our host record and tells our renamed DICOM record apart."""
        self.announcement = announcement
        host_label = host_label or (
            announcement.mesh.node_id if announcement.mesh else announcement.dicom.aet
        )
        self._on_mesh = on_mesh
        self._on_dicom = on_dicom
        self._on_dicom_removed = on_dicom_removed
        self._interfaces = list(interfaces)
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._infos: dict[str, AsyncServiceInfo] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._renamed = False
        self._host_label = host_label

    @property
    def own_names(self) -> set[str]:
        return {info.name for info in self._infos.values()}

    def _addresses(self) -> list[str]:
        return list(self.announcement.dicom.addresses) or interface_addresses(self._interfaces)

    async def start(self) -> None:
        bind = self._addresses()
        self._azc = AsyncZeroconf(interfaces=bind or ["127.0.0.1"], ip_version=IPVersion.V4Only)
        # Browse first: we learn of the others (and introduce ourselves by probing them)
        # while our own records are still being announced.
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf, [MESH_TYPE, DICOM_TYPE], handlers=[self._on_change]
        )
        await self._register_all()

    def _build_infos(self, addresses: list[str]) -> dict[str, AsyncServiceInfo]:
        mesh, dicom = self.announcement.mesh, self.announcement.dicom
        packed = [socket.inet_aton(a) for a in addresses]
        server = f"pacsmesh-{instance_label(self._host_label)[:15].strip('-')}.local."
        infos = {
            "dicom": AsyncServiceInfo(
                dicom.service_type,
                dicom_instance_name(dicom.aet, self._host_label, self._renamed,
                                    dicom.service_type),
                addresses=packed, port=dicom.port, properties=dicom.properties(), server=server,
            ),
        }
        if mesh is not None:
            infos["mesh"] = AsyncServiceInfo(
                MESH_TYPE, f"{instance_label(mesh.node_id)}.{MESH_TYPE}",
                addresses=packed, port=mesh.mesh_port, properties=mesh.properties(),
                server=server,
            )
        return infos

    async def _register_all(self) -> None:
        assert self._azc is not None
        self._infos = self._build_infos(self._addresses())
        # The mesh record's name is our random node id: no one else can hold it, so the
        # ~1.5 s of uniqueness probing is skipped. The DICOM record's AE title can clash,
        # so it is probed, in the background.
        pending = [asyncio.ensure_future(self._register_dicom())]
        if "mesh" in self._infos:
            announcing = await self._azc.async_register_service(
                self._infos["mesh"], cooperating_responders=True
            )
            pending.append(asyncio.ensure_future(announcing))
        for task in pending:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _register_dicom(self) -> None:
        assert self._azc is not None
        try:
            await (await self._azc.async_register_service(self._infos["dicom"]))
        except NonUniqueNameException:
            log.warning(
                "another device already announces DICOM AE title %s on this network",
                self.announcement.dicom.aet,
            )
            await self.rename_dicom_record()

    async def rename_dicom_record(self) -> None:
        """Re-announce our DICOM record under the deterministic alternative name."""
        if self._renamed or self._azc is None:
            return
        self._renamed = True
        old = self._infos.get("dicom")
        if old is not None:
            await (await self._azc.async_unregister_service(old))
        new = self._build_infos(self._addresses())["dicom"]
        await (await self._azc.async_register_service(new))
        self._infos["dicom"] = new
        log.warning("DICOM record renamed to %r", new.name)

    async def refresh_addresses(self) -> bool:
        """Re-announce if our addresses changed (DHCP renewal); True if they did.

        The sockets are bound to the old addresses, so zeroconf starts afresh on the new.
        """
        if self._azc is None or self.announcement.dicom.addresses:
            return False
        current = interface_addresses(self._interfaces)
        announced = sorted(self._infos["dicom"].parsed_addresses())
        if not current or current == announced:
            return False
        log.info("addresses changed from %s to %s: re-announcing", announced, current)
        await self.stop()
        await self.start()
        return True

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if name in self.own_names:
            return
        if state_change is ServiceStateChange.Removed:
            if service_type == DICOM_TYPE:
                self._on_dicom_removed(name)
            return
        task = asyncio.ensure_future(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        assert self._azc is not None
        info = AsyncServiceInfo(service_type, name)
        try:
            if not await info.async_request(self._azc.zeroconf, RESOLVE_TIMEOUT_MS):
                return
        except BadTypeInNameException:
            return
        addresses = tuple(a for a in info.parsed_addresses(IPVersion.V4Only)
                          if not a.startswith("127.") or not self._interfaces)
        try:
            if service_type == MESH_TYPE:
                self._on_mesh(decode_mesh(info.properties, addresses))
            elif info.port:
                self._on_dicom(name, decode_dicom(info.properties, info.port, addresses))
        except RecordError as exc:
            log.debug("ignoring record %s: %s", name, exc)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._azc is not None:
            await self._azc.async_unregister_all_services()
            await self._azc.async_close()
            self._azc = None
