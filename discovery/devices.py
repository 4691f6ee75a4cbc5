"""The DICOM device directory: devices announcing ``_dicom._tcp`` on the LAN, by instance
name, and what the DICOM services ask of them (which AE titles are known, where one is)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from discovery.mdns import interface_addresses
from discovery.peers import Peer
from discovery.records import DicomRecord
from discovery.roster import RosterView

log = logging.getLogger("discovery.service")  # these lines have always come from there


class DeviceDirectory:
    def __init__(self, own_aet: str) -> None:
        self._own_aet = own_aet
        self.devices: dict[str, DicomRecord] = {}  # other DICOM devices, by instance name

    def announced(self, name: str, record: DicomRecord) -> None:
        if record.aet == self._own_aet and not set(record.addresses) & set(
            interface_addresses()
        ):
            log.warning("another DICOM device on this network announces AE title %s", record.aet)
        self.devices[name] = record

    def removed(self, name: str) -> None:
        self.devices.pop(name, None)

    def known_aets(self, view: RosterView | None) -> set[str]:
        """AE titles of the roster's members and of DICOM devices announcing themselves."""
        titles = {record.aet for record in self.devices.values()}
        if view is not None:
            titles |= {m.aet for nid, m in view.members.items() if view.is_member(nid)}
        return {t for t in titles if t}

    def destination(self, aet: str, alive: Iterable[Peer]) -> tuple[str, int] | None:
        """Where a DICOM device announcing ``aet`` can be reached, if one does, else a
        member alive with that title."""
        for record in self.devices.values():
            if record.aet == aet and record.addresses:
                return record.addresses[0], record.port
        for peer in alive:
            if peer.aet == aet and peer.addresses and peer.dicom_port:
                return peer.addresses[0], peer.dicom_port
        return None
