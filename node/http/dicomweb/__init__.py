"""DICOMweb (PS3.18) on the node's HTTP server: QIDO-RS, WADO-RS, STOW-RS under
``/dicom-web`` and WADO-URI at ``/wado``, one module per service, all reading through
the one index."""

from __future__ import annotations

from aiohttp import web

from node.http.dicomweb import frames, qido, rendered, stow, wado, wado_uri
from node.http.dicomweb.context import DicomWeb

__all__ = ["DicomWeb", "routes"]


def routes(context: DicomWeb) -> list[web.RouteDef]:
    return [*qido.routes(context), *wado.routes(context), *frames.routes(context),
            *rendered.routes(context), *stow.routes(context), *wado_uri.routes(context)]
