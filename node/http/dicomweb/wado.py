"""WADO-RS (PS3.18 10.4): studies, series and instances as multipart/related Part 10
files, bit-exact as stored, and their metadata in DICOM JSON with bulk data by URI.

Instances only other members hold are fetched first through the mesh's fetcher (the
seam C-GET uses), so a failed fetch is a 503 before anything is sent, not a cut stream.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
from collections.abc import Awaitable, Callable

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
    json_answer,
    matches,
    refusal,
)
from node.http.dicomweb.dicom_json import metadata_json
from node.index import StoredInstance
from node.query import parse_identifier
from node.storage import StorageError, TamperedObject

log = logging.getLogger(__name__)
DICOM = "application/dicom"
MULTIPART = "multipart/related"
_CHUNK = 1 << 20
_PATH_KEYS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID",
              "instance": "SOPInstanceUID"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def _identifier(request: web.Request) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    for key, keyword in _PATH_KEYS.items():
        if key in request.match_info:
            setattr(ds, keyword, request.match_info[key])
    return ds


async def _read(context: DicomWeb, inst: StoredInstance) -> bytes:
    try:
        return await asyncio.to_thread(context.archive.storage.read, inst.sha256)
    except TamperedObject as exc:
        await context.archive.set_aside(exc.sha256, str(exc))
        raise refusal(web.HTTPServiceUnavailable,
                      "a stored copy failed its check and was set aside; retry to get"
                      " it from a replica") from None
    except OSError as exc:
        log.error("WADO-RS: object %s unreadable: %s", inst.sha256[:12], exc)
        raise refusal(web.HTTPInternalServerError, "a stored instance cannot be read") from None


def routes(context: DicomWeb) -> list[web.RouteDef]:
    async def resolve(request: web.Request) -> list[StoredInstance]:
        """The instances the path names, each here when this returns (fetched from
        the mesh if need be); 404 when none matches, 503 when one cannot be fetched."""
        index = context.archive.index
        mesh = context.mesh
        instances = await index.instances_for(parse_identifier(_identifier(request)),
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

    async def settle(instances: list[StoredInstance]) -> None:
        if context.mesh is not None:
            await context.mesh.used_locally([i.sop_uid for i in instances if i.local])
            await context.mesh.enforce_budget()

    def audit(request: web.Request, instances: list[StoredInstance], what: str) -> None:
        per_study: dict[str, int] = {}
        for inst in instances:
            per_study[inst.study_uid] = per_study.get(inst.study_uid, 0) + 1
        for study, count in sorted(per_study.items()):
            context.record(request, Action.RETRIEVE, Outcome.SUCCESS,
                           f"{what}: {count} instance(s)", study_uid=study)

    async def retrieve(request: web.Request) -> web.StreamResponse:
        ranges = accepted(request.headers.get("Accept"))
        instances = await resolve(request)
        if not any(dicom_range_fits(m, instances) for m in ranges):
            raise refusal(web.HTTPNotAcceptable,
                          'instances are served as multipart/related; type="application/dicom"'
                          " in the transfer syntax they are stored in")
        boundary = secrets.token_hex(16)
        response = web.StreamResponse(headers={
            "Content-Type": f'{MULTIPART}; type="{DICOM}"; boundary={boundary}'})
        first = await _read(context, instances[0])  # a read failure is still a status
        await response.prepare(request)
        for n, inst in enumerate(instances):
            data = first if n == 0 else await _read_streaming(context, inst, response)
            await response.write(
                f"--{boundary}\r\nContent-Type: {DICOM}; transfer-syntax="
                f"{inst.transfer_syntax_uid}\r\nContent-Length: {len(data)}\r\n\r\n".encode())
            for start in range(0, len(data), _CHUNK):
                await response.write(data[start:start + _CHUNK])
            await response.write(b"\r\n")
        await response.write(f"--{boundary}--\r\n".encode())
        await response.write_eof()
        audit(request, instances, "WADO-RS retrieve")
        await settle(instances)
        return response

    async def metadata(request: web.Request) -> web.Response:
        if not any(matches(m, DICOM_JSON) or matches(m, "application/json")
                   for m in accepted(request.headers.get("Accept"))):
            raise refusal(web.HTTPNotAcceptable, "metadata is application/dicom+json only")
        instances = await resolve(request)
        answers = []
        for inst in instances:
            data = await _read(context, inst)
            ds = await asyncio.to_thread(dcmread, io.BytesIO(data))
            base = (f"{PREFIX}/studies/{inst.study_uid}/series/{inst.series_uid}"
                    f"/instances/{inst.sop_uid}")
            answer = metadata_json(ds, base)
            # What a viewer needs to decode frames it fetches apart from the file.
            answer["00020010"] = {"vr": "UI", "Value": [inst.transfer_syntax_uid]}
            answers.append(dict(sorted(answer.items())))
        audit(request, instances, "WADO-RS metadata")
        await settle(instances)
        return json_answer(answers)

    p = f"{PREFIX}/studies/{{study}}"
    return [
        web.get(p, retrieve),
        web.get(f"{p}/metadata", metadata),
        web.get(f"{p}/series/{{series}}", retrieve),
        web.get(f"{p}/series/{{series}}/metadata", metadata),
        web.get(f"{p}/series/{{series}}/instances/{{instance}}", retrieve),
        web.get(f"{p}/series/{{series}}/instances/{{instance}}/metadata", metadata),
    ]


async def _read_streaming(context: DicomWeb, inst: StoredInstance,
                          response: web.StreamResponse) -> bytes:
    """A read once the status is sent: a failure can only cut the stream short, which
    the client sees as a multipart body without its closing boundary."""
    try:
        return await _read(context, inst)
    except web.HTTPException:
        response.force_close()
        raise StorageError(f"instance {inst.sha256[:12]} unreadable mid-answer") from None
