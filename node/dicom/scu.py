"""Outgoing DICOM requests made by the node's CLI (blocking; run off the event loop)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from node.config import RemoteAE

T = TypeVar("T")
# Pauses before the 2nd, 3rd, ... attempt of a failed sub-operation or association.
RETRY_DELAYS = (0.5, 1.0, 2.0)


class AssociationFailed(ConnectionError):
    """The peer could not be reached or rejected the association."""


@dataclass(frozen=True)
class EchoResult:
    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0x0000


def client_ae(calling_aet: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def associate(ae: AE, remote: RemoteAE, **kwargs: Any) -> Association:
    """An established association with ``remote``, or :class:`AssociationFailed`."""
    connected: list[bool] = []
    handlers = [*kwargs.pop("evt_handlers", []),
                (evt.EVT_CONN_OPEN, lambda _event: connected.append(True))]
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.aet,
                         evt_handlers=handlers, **kwargs)
    if not assoc.is_established and not connected:
        # pynetdicom reports a refused or timed-out TCP connection as an abort.
        raise AssociationFailed(
            f"cannot connect to {remote}: nothing answers at {remote.host}:{remote.port}"
        )
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        raise AssociationFailed(f"association with {remote} {reason}")
    return assoc


def with_retries(
    attempt: Callable[[int], T], done: Callable[[T], bool],
    delays: tuple[float, ...] = RETRY_DELAYS, sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``attempt(n)`` until ``done`` says so or the delays run out; the last result
    (or the last AssociationFailed) is the caller's. Backoff grows with each try."""
    for n, delay in enumerate((*delays, None)):
        try:
            result = attempt(n)
        except AssociationFailed:
            if delay is None:
                raise
        else:
            if done(result) or delay is None:
                return result
        sleep(delay)
    raise AssertionError("unreachable")


def echo(remote: RemoteAE, calling_aet: str, timeout: float = 10.0) -> EchoResult:
    ae = client_ae(calling_aet, timeout)
    ae.add_requested_context(Verification)
    assoc = associate(ae, remote)
    try:
        rsp = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in rsp:
        raise AssociationFailed(f"{remote} sent no C-ECHO response")
    return EchoResult(int(rsp.Status))
