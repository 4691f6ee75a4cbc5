"""Outgoing DICOM requests made by the node's CLI (blocking; run off the event loop)."""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from node.config import RemoteAE


class AssociationFailed(ConnectionError):
    """The peer could not be reached or rejected the association."""


@dataclass(frozen=True)
class EchoResult:
    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0x0000


def echo(remote: RemoteAE, calling_aet: str, timeout: float = 10.0) -> EchoResult:
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    connected: list[bool] = []
    assoc = ae.associate(
        remote.host, remote.port, ae_title=remote.aet,
        evt_handlers=[(evt.EVT_CONN_OPEN, lambda _event: connected.append(True))],
    )
    if not assoc.is_established and not connected:
        # pynetdicom reports a refused or timed-out TCP connection as an abort.
        raise AssociationFailed(
            f"cannot connect to {remote}: nothing answers at {remote.host}:{remote.port}"
        )
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        raise AssociationFailed(f"association with {remote} {reason}")
    try:
        rsp = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in rsp:
        raise AssociationFailed(f"{remote} sent no C-ECHO response")
    return EchoResult(int(rsp.Status))
