"""What every DICOMweb service reads: the archive, the audit trail, the mesh, the
request's Accept header, and the one way answers and refusals are written."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from node.archive import Archive
from node.audit import Action, AuditEvent, AuditTrail, Outcome
from node.dicom.retrieve_scp import MeshSource
from node.http.auth import USER_KEY
from node.http.dicomweb.frame_index import FrameMaps
from node.http.dicomweb.metadata_cache import Answer, MetadataCache

PREFIX = "/dicom-web"
DICOM_JSON = "application/dicom+json"


class Touches:
    """Which instances were marked used lately. The mesh cache's least-recently-used
    order needs minutes, not every frame: marking is a database write, ~15 % of a frame
    request's time when done for each (py-spy, 500 frames)."""

    def __init__(self, every: float = 60.0, limit: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.limit, self.clock = every, limit, clock
        self._last: OrderedDict[str, float] = OrderedDict()

    def due(self, sop_uids: Iterable[str]) -> list[str]:
        """Those of ``sop_uids`` not marked within ``every`` seconds; they count as
        marked from now."""
        now = self.clock()
        out = []
        for uid in sop_uids:
            last = self._last.get(uid)
            if last is None or now - last >= self.every:
                out.append(uid)
                self._last[uid] = now
                self._last.move_to_end(uid)
        while len(self._last) > self.limit:
            self._last.popitem(last=False)
        return out


@dataclass(frozen=True)
class DicomWeb:
    archive: Archive
    trail: AuditTrail
    # Answers for what other members hold (replication.retrieve); None: a lone node.
    mesh: MeshSource | None = None
    over_mesh: bool = True  # query_scope "mesh": search the mesh catalog, not only here
    max_body: int = 2**30
    # Built on first request, kept by content (see metadata_cache and frame_index).
    metadata: MetadataCache = field(default_factory=MetadataCache)
    frame_maps: FrameMaps = field(default_factory=FrameMaps)
    touches: Touches = field(default_factory=Touches)

    def record(self, request: web.Request, action: Action, outcome: Outcome, detail: str,
               patient_id: str = "", study_uid: str = "") -> None:
        self.trail.record(AuditEvent(
            action=action, outcome=outcome, user=str(request.get(USER_KEY, "")),
            address=request.remote or "", patient_id=patient_id,
            study_uid=study_uid or request.match_info.get("study", ""),
            detail=f"DICOMweb {request.method} {request.path}: {detail}"))


def refusal(status: type[web.HTTPException], reason: str) -> web.HTTPException:
    """A 4xx/5xx answer whose body says why in one line."""
    return status(text=reason + "\n")


def json_answer(payload: Any, status: int = 200) -> web.Response:
    """``payload`` as JSON, or as it is when it is JSON's bytes already."""
    # Content-Type exactly application/dicom+json: aiohttp's content_type= would add a
    # charset parameter, which some STOW clients compare against.
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = web.Response(body=body, status=status,
                            headers={"Content-Type": DICOM_JSON})
    # Metadata and search answers are repetitive text: gzip shrinks them ~10x for a
    # client that says it takes it (aiohttp reads Accept-Encoding).
    response.enable_compression()
    return response


def takes_gzip(request: web.Request) -> bool:
    for item in split(request.headers.get("Accept-Encoding", ""), ","):
        coding, params = media_type(item)
        if coding in ("gzip", "*"):
            try:
                return float(params.get("q", "1")) > 0
            except ValueError:
                return False
    return False


def ready_answer(request: web.Request, ready: Answer) -> web.Response:
    """A JSON answer built before: its gzipped bytes for a client that takes gzip, as
    aiohttp's compression would send, without compressing again."""
    headers = {"Content-Type": DICOM_JSON, "Vary": "Accept-Encoding"}
    if takes_gzip(request):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=ready.gzipped, headers=headers)
    return web.Response(body=ready.body, headers=headers)


@dataclass(frozen=True)
class MediaRange:
    type: str  # e.g. "multipart/related", "application/*", "*/*"
    params: dict[str, str]
    q: float


def split(text: str, separator: str) -> list[str]:
    """Pieces between ``separator``s, keeping separators inside quoted strings."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """A Content-Type header's media type (lower case) and parameters (names lower case,
    values unquoted)."""
    first, *rest = split(header, ";") or [""]
    params: dict[str, str] = {}
    for piece in rest:
        name, _, value = piece.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return first.strip().lower(), params


def accepted(header: str | None) -> list[MediaRange]:
    """The Accept header's media ranges, best first (PS3.18 8.7: quoted or unquoted
    parameters, lists, wildcards); none given means anything."""
    if not header or not header.strip():
        return [MediaRange("*/*", {}, 1.0)]
    out = []
    for n, item in enumerate(split(header, ",")):
        kind, params = media_type(item)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if q > 0:
            out.append((q, -n, MediaRange(kind, params, q)))
    return [m for _, _, m in sorted(out, key=lambda t: (t[0], t[1]), reverse=True)]


def matches(media: MediaRange, wanted: str) -> bool:
    """Whether ``media`` (a range) covers the concrete type ``wanted``."""
    if media.type in ("*/*", wanted):
        return True
    major, _, minor = media.type.partition("/")
    return minor == "*" and wanted.startswith(major + "/")
