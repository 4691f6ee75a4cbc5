"""WADO-URI (PS3.18 9), which EHR links and older viewers still use:
``/wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..&contentType=application/dicom``
answers the stored file byte for byte (its patient attributes coerced when patient events
changed that patient's identity). Rendered content types (the default image/jpeg
among them) are refused 406 until rendering exists, never answered with something else.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from node.http.dicomweb.context import DicomWeb, refusal
from node.http.dicomweb.wado import DICOM, audit, coerced_file, open_instance, resolve, settle

_UIDS = {"studyUID": "study", "seriesUID": "series", "objectUID": "instance"}


def routes(context: DicomWeb) -> list[web.RouteDef]:
    async def wado(request: web.Request) -> web.StreamResponse:
        query = request.query
        if query.get("requestType") != "WADO":
            raise refusal(web.HTTPBadRequest, "requestType=WADO is required")
        missing = [name for name in _UIDS if not query.get(name)]
        if missing:
            raise refusal(web.HTTPBadRequest, f"{', '.join(missing)} missing")
        wanted = [t.split(";")[0].strip().lower()
                  for t in query.get("contentType", "image/jpeg").split(",")]
        if DICOM not in wanted and "*/*" not in wanted:
            raise refusal(web.HTTPNotAcceptable,
                          "only contentType=application/dicom is served (no rendering yet)")
        [inst] = await resolve(context, {key: query[name] for name, key in _UIDS.items()})
        syntax = query.get("transferSyntax")
        if syntax and syntax != inst.transfer_syntax_uid:
            raise refusal(web.HTTPNotAcceptable,
                          f"the instance is stored in {inst.transfer_syntax_uid}, which is"
                          " the only transfer syntax served (no transcoding here)")
        fh = await open_instance(context, inst, None)
        patients = context.archive.index.patients
        response: web.StreamResponse
        try:
            if patients.presents(inst.patient_id):  # IHE PIR: the current identity
                data = await asyncio.to_thread(coerced_file, fh, patients.coerce)
                response = web.Response(body=data, headers={"Content-Type": DICOM})
                await response.prepare(request)
                await response.write_eof()
            else:
                response = web.StreamResponse(headers={"Content-Type": DICOM})
                response.content_length = inst.size
                await response.prepare(request)
                while block := await asyncio.to_thread(fh.read, 1 << 20):
                    await response.write(block)
                await response.write_eof()
        finally:
            fh.close()
        audit(context, request, [inst], "WADO-URI")
        await settle(context, [inst])
        return response

    return [web.get("/wado", wado)]
