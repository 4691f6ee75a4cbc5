"""DICOM over TLS on the DIMSE port (PS3.15 B.1, the BCP 195 profile): TLS 1.2 or newer.

The node presents its own certificate (made at first start, see node/identity.py) unless
the admin gives another, e.g. one the hospital's CA signed. Clients are not asked for a
certificate: who may do what is decided by AE title (access control) and recorded.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class DicomTlsError(ValueError):
    """The certificate or key for DICOM TLS cannot be used; one line for the admin."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise DicomTlsError(f"cannot use {cert} and {key} for DICOM TLS: {exc}") from None
    return context
