"""WADO-RS (PS3.18 10.4): studies, series and instances as multipart/related Part 10
files, bit-exact as stored, and their metadata in DICOM JSON with bulk data by URI.

Instances only other members hold are fetched first through the mesh's fetcher (the
seam C-GET uses), so a failed fetch is a 503 before anything is sent, not a cut stream.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import BinaryIO

from aiohttp import web
from pydicom import dcmread
from pydicom.dataset import Dataset

from node.audit import Action, Outcome
from node.http.dicomweb.context import (
    DICOM_JSON,
    PREFIX,
    DicomWeb,
    MediaRange,
    accepted,
    matches,
    ready_answer,
    refusal,
)
from node.http.dicomweb.dicom_json import Memo, element_at, metadata_json
from node.http.dicomweb.metadata_cache import Answer, fingerprint
from node.http.dicomweb.metadata_cache import answer as build_answer
from node.index import StoredInstance
from node.query import parse_identifier
from node.storage import StorageError, TamperedObject

log = logging.getLogger(__name__)
DICOM = "application/dicom"
OCTETS = "application/octet-stream"
PIXEL_DATA = 0x7FE00010
MULTIPART = "multipart/related"
_CHUNK = 1 << 20
_PATH_KEYS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID",
              "instance": "SOPInstanceUID"}


class Multipart(web.StreamResponse):
    """A multipart/related answer written part by part, never held whole."""

    def __init__(self, part_type: str) -> None:
        self.boundary = secrets.token_hex(16)
        super().__init__(headers={
            "Content-Type": f'{MULTIPART}; type="{part_type}"; boundary={self.boundary}'})

    async def _head(self, content_type: str, size: int, location: str = "") -> None:
        where = f"Content-Location: {location}\r\n" if location else ""
        await self.write(f"--{self.boundary}\r\nContent-Type: {content_type}\r\n{where}"
                         f"Content-Length: {size}\r\n\r\n".encode())

    async def part(self, content_type: str, data: bytes, location: str = "") -> None:
        await self._head(content_type, len(data), location)
        for start in range(0, len(data), _CHUNK):
            await self.write(data[start:start + _CHUNK])
        await self.write(b"\r\n")

    async def file_part(self, content_type: str, fh: BinaryIO, size: int) -> None:
        """A part read from ``fh`` block by block (``size`` bytes of plaintext): once
        the status is sent, a failure can only cut the stream short, which the client
        sees as a multipart body without its closing boundary."""
        await self._head(content_type, size)
        sent = 0
        while block := await asyncio.to_thread(fh.read, _CHUNK):
            sent += len(block)
            await self.write(block)
        if sent != size:
            self.force_close()
            raise StorageError(f"an object held {sent} bytes, not {size}")
        await self.write(b"\r\n")

    async def finish(self) -> None:
        await self.write(f"--{self.boundary}--\r\n".encode())
        await self.write_eof()


def _stored_syntax_fits(media: MediaRange, instances: list[StoredInstance]) -> bool:
    """The files go out as stored: a range fits when it names no transfer syntax, ``*``,
    or the one every instance is stored in."""
    syntax = media.params.get("transfer-syntax", "*")
    return syntax == "*" or all(i.transfer_syntax_uid == syntax for i in instances)


def dicom_range_fits(media: MediaRange, instances: list[StoredInstance]) -> bool:
    """``multipart/related; type="application/dicom"`` (or a wildcard covering it)."""
    if media.type == "*/*":
        return True
    if not matches(media, MULTIPART):
        return False
    part = media.params.get("type", DICOM).lower()
    return part in (DICOM, "application/*", "*/*") and _stored_syntax_fits(media, instances)


def _identifier(uids: Mapping[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    for key, keyword in _PATH_KEYS.items():
        if key in uids:
            setattr(ds, keyword, uids[key])
    return ds


async def set_aside(context: DicomWeb, exc: TamperedObject) -> web.HTTPException:
    """Set the damaged object aside; the refusal to raise."""
    await context.archive.set_aside(exc.sha256, str(exc))
    return refusal(web.HTTPServiceUnavailable,
                   "a stored copy failed its check and was set aside; retry to get"
                   " it from a replica")


async def read_instance(context: DicomWeb, inst: StoredInstance) -> bytes:
    try:
        return await asyncio.to_thread(context.archive.storage.read, inst.sha256)
    except TamperedObject as exc:
        raise await set_aside(context, exc) from None
    except OSError as exc:
        log.error("WADO-RS: object %s unreadable: %s", inst.sha256[:12], exc)
        raise refusal(web.HTTPInternalServerError, "a stored instance cannot be read") from None


async def resolve(context: DicomWeb, uids: Mapping[str, str]) -> list[StoredInstance]:
    """The instances ``uids`` name (``study``, ``series``, ``instance``: a path's),
    each here when this returns (fetched from the mesh if need be); 404 when none
    matches, 503 when one cannot be fetched."""
    index = context.archive.index
    mesh = context.mesh
    instances = await index.instances_for(parse_identifier(_identifier(uids)),
                                          mesh=mesh is not None)
    if not instances:
        raise refusal(web.HTTPNotFound, "no such study, series or instance")
    remote = [i for i in instances if not i.local]
    if remote and mesh is not None:
        fetching = await mesh.start(remote)
        try:
            for inst in remote:
                await fetching.take(inst.sop_uid)
        except Exception as exc:  # any failure of a holder: the answer is 503
            log.warning("WADO-RS: instance %s not fetched from the mesh: %s",
                        inst.sha256[:12], exc)
            raise refusal(web.HTTPServiceUnavailable,
                          "an instance held on other members could not be fetched"
                          " from any of them") from None
        finally:
            await fetching.close()
    return instances


async def settle(context: DicomWeb, instances: list[StoredInstance]) -> None:
    if context.mesh is not None:
        await context.mesh.used_locally(context.touches.due(
            i.sop_uid for i in instances if i.local))
        # Only what was fetched for this answer can have grown the cache past its budget.
        if any(not i.local for i in instances):
            await context.mesh.enforce_budget()


def audit(context: DicomWeb, request: web.Request, instances: list[StoredInstance],
          what: str) -> None:
    per_study: dict[str, int] = {}
    for inst in instances:
        per_study[inst.study_uid] = per_study.get(inst.study_uid, 0) + 1
    for study, count in sorted(per_study.items()):
        context.record(request, Action.RETRIEVE, Outcome.SUCCESS,
                       f"{what}: {count} instance(s)", study_uid=study)


def routes(context: DicomWeb) -> list[web.RouteDef]:
    async def retrieve(request: web.Request) -> web.StreamResponse:
        ranges = accepted(request.headers.get("Accept"))
        instances = await resolve(context, request.match_info)
        if not any(dicom_range_fits(m, instances) for m in ranges):
            raise refusal(web.HTTPNotAcceptable,
                          'instances are served as multipart/related; type="application/dicom"'
                          " in the transfer syntax they are stored in")
        response = Multipart(DICOM)
        for n, inst in enumerate(instances):
            fh = await open_instance(context, inst, response if n else None)
            try:
                if n == 0:  # opened before the status is sent: a missing file is a 500
                    await response.prepare(request)
                await response.file_part(
                    f"{DICOM}; transfer-syntax={inst.transfer_syntax_uid}", fh, inst.size)
            except TamperedObject as exc:
                response.force_close()
                await context.archive.set_aside(exc.sha256, str(exc))
                raise
            finally:
                fh.close()
        await response.finish()
        audit(context, request, instances, "WADO-RS retrieve")
        await settle(context, instances)
        return response

    async def metadata(request: web.Request) -> web.Response:
        if not any(matches(m, DICOM_JSON) or matches(m, "application/json")
                   for m in accepted(request.headers.get("Accept"))):
            raise refusal(web.HTTPNotAcceptable, "metadata is application/dicom+json only")
        instances = await resolve(context, request.match_info)
        ready = await metadata_answer(context, request.match_info, instances)
        audit(context, request, instances, "WADO-RS metadata")
        await settle(context, instances)
        return ready_answer(request, ready)

    async def bulkdata(request: web.Request) -> web.StreamResponse:
        if not any(m.type == "*/*" or (matches(m, MULTIPART) and m.params.get(
                "type", OCTETS).lower() in (OCTETS, "application/*", "*/*"))
                for m in accepted(request.headers.get("Accept"))):
            raise refusal(web.HTTPNotAcceptable,
                          f'bulk data is served as {MULTIPART}; type="{OCTETS}"')
        [inst] = await resolve(context, request.match_info)
        ds = await asyncio.to_thread(dcmread, io.BytesIO(await read_instance(context, inst)))
        elem = element_at(ds, request.match_info["path"])
        if elem is None:
            raise refusal(web.HTTPNotFound, "the instance has no bulk data at that path")
        if int(elem.tag) == PIXEL_DATA and ds.file_meta.TransferSyntaxUID.is_encapsulated:
            raise refusal(web.HTTPNotAcceptable,
                          "encapsulated pixel data is not served as bulk data yet (frames"
                          " and rendered are not implemented)")
        response = Multipart(OCTETS)
        await response.prepare(request)
        await response.part(OCTETS, bytes(elem.value), request.path)
        await response.finish()
        audit(context, request, [inst], "WADO-RS bulk data")
        await settle(context, [inst])
        return response

    p = f"{PREFIX}/studies/{{study}}"
    return [
        web.get(p, retrieve),
        web.get(f"{p}/metadata", metadata),
        web.get(f"{p}/series/{{series}}", retrieve),
        web.get(f"{p}/series/{{series}}/metadata", metadata),
        web.get(f"{p}/series/{{series}}/instances/{{instance}}", retrieve),
        web.get(f"{p}/series/{{series}}/instances/{{instance}}/metadata", metadata),
        web.get(f"{p}/series/{{series}}/instances/{{instance}}/bulkdata/{{path:.+}}",
                bulkdata),
    ]


def instance_metadata(data: bytes, inst: StoredInstance, memo: Memo | None = None,
                      coerce: Callable[[Dataset], bool] | None = None) -> bytes:
    """One instance's metadata answer as JSON bytes (keys sorted)."""
    ds = dcmread(io.BytesIO(data))
    if coerce is not None:
        coerce(ds)  # r16-hl7: the patient's current identity (IHE PIR)
    base = (f"{PREFIX}/studies/{inst.study_uid}/series/{inst.series_uid}"
            f"/instances/{inst.sop_uid}")
    answer = metadata_json(ds, base, memo)
    # What a viewer needs to decode frames it fetches apart from the file.
    answer["00020010"] = {"vr": "UI", "Value": [inst.transfer_syntax_uid]}
    return json.dumps(dict(sorted(answer.items()))).encode()


async def metadata_answer(context: DicomWeb, uids: Mapping[str, str],
                          instances: list[StoredInstance]) -> Answer:
    """The metadata answer of ``instances`` (what the path ``uids`` names), from the
    cache, or from what of it the cache holds and the objects for the rest."""
    cache = context.metadata
    key = (uids["study"], uids.get("series", ""), uids.get("instance", ""))
    stamp = fingerprint(i.sha256 for i in instances)
    ready = cache.answer(key, stamp)
    if ready is not None:
        return ready
    parts = []
    memo: Memo = {}  # one build's, so it lives no longer than the build
    for inst in instances:
        part = cache.instance(inst.sha256)
        if part is None:
            part = await asyncio.to_thread(instance_metadata,
                                           await read_instance(context, inst), inst, memo,
                                           context.archive.index.patients.coerce)
            cache.put_instance(inst.sha256, inst.study_uid, part)
        parts.append(part)
    ready = await asyncio.to_thread(build_answer, stamp, parts)
    cache.put_answer(key, ready)
    return ready


async def open_instance(context: DicomWeb, inst: StoredInstance,
                        streaming: web.StreamResponse | None) -> BinaryIO:
    """The stored object's plaintext; a refusal while no status is sent, else the
    ``streaming`` answer is cut short."""
    try:
        return await asyncio.to_thread(context.archive.storage.open_object, inst.sha256)
    except OSError as exc:
        log.error("WADO-RS: object %s unreadable: %s", inst.sha256[:12], exc)
        if streaming is not None:
            streaming.force_close()
            raise
        raise refusal(web.HTTPInternalServerError, "a stored instance cannot be read") from None
