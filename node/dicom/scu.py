"""Outgoing DICOM requests made by the node's CLI (blocking; run off the event loop)."""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom import AE
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
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.aet)
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
