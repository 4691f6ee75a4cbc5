"""Announce a DICOM device over mDNS (``<AET>._dicom._tcp``, DICOM PS3.15 Annex H), as a
workstation on the LAN does, until SIGTERM. For tests: run inside a host's namespace.

    python -m tests.dicom_announcer AET ADDRESS PORT
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

from zeroconf import ServiceInfo, Zeroconf

from discovery.records import DicomRecord


def main() -> None:
    aet, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    record = DicomRecord(aet=aet, device_type="WSD", port=port, addresses=(address,))
    info = ServiceInfo(
        "_dicom._tcp.local.", f"{aet}._dicom._tcp.local.",
        addresses=[socket.inet_aton(address)], port=port, properties=record.properties(),
        server=f"{aet.lower()}.local.",
    )
    zc = Zeroconf(interfaces=[address])
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    zc.register_service(info, allow_name_change=False)
    print("announced", flush=True)
    done.wait()
    zc.unregister_service(info)  # the goodbye packet: caches drop the old address
    zc.close()


if __name__ == "__main__":
    main()
