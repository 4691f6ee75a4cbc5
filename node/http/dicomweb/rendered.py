"""WADO-RS rendered and thumbnail (PS3.18 10.4.1.1.3, 10.4.1.1.4.5): one frame as JPEG or
PNG, decoded by pydicom (its pylibjpeg plugins) and drawn with the image's own window
(its VOI LUT or Window Center/Width, else its full range) by Pillow."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from aiohttp import web
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from node.http.dicomweb.context import PREFIX, DicomWeb, accepted, matches, refusal
from node.http.dicomweb.frames import frame_numbers
from node.http.dicomweb.wado import audit, read_instance, resolve, settle

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}
THUMBNAIL = 128  # pixels, the longer side


def _picture(ds: Dataset, frame: int) -> Image.Image:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frame > frames:
        raise refusal(web.HTTPNotFound, f"the instance has {frames} frame(s), not {frame}")
    pixels = ds.pixel_array
    if frames > 1:
        pixels = pixels[frame - 1]
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            scaled = 255.0 - scaled
        return Image.fromarray(scaled.astype(np.uint8))
    if pixels.dtype != np.uint8:  # colour above 8 bits: down to 8, keeping the range
        pixels = (pixels.astype(np.float64) * (255.0 / max(float(pixels.max()), 1.0)))
    return Image.fromarray(pixels.astype(np.uint8))


def render(data: bytes, frame: int, media: str, longest: int | None) -> bytes:
    ds = dcmread(io.BytesIO(data))
    if "PixelData" not in ds:
        raise refusal(web.HTTPNotFound, "the instance has no pixel data to render")
    try:
        picture = _picture(ds, frame)
    except web.HTTPException:
        raise
    except Exception as exc:  # a syntax without a decoder, or pixel data it rejects
        raise refusal(web.HTTPNotAcceptable,
                      f"the pixel data cannot be decoded for rendering: {exc}") from None
    if longest is not None:
        picture.thumbnail((longest, longest))
    out = io.BytesIO()
    picture.save(out, format=FORMATS[media], **({"quality": 90} if media == "image/jpeg"
                                                 else {}))
    return out.getvalue()


def _media(request: web.Request) -> str:
    for media in accepted(request.headers.get("Accept")):
        for kind in FORMATS:
            if matches(media, kind):
                return kind
    raise refusal(web.HTTPNotAcceptable, "rendered images are image/jpeg or image/png")


def routes(context: DicomWeb) -> list[web.RouteDef]:
    async def answer(request: web.Request, frame: int, longest: int | None) -> web.Response:
        media = _media(request)
        [inst] = await resolve(context, request.match_info)
        data = await read_instance(context, inst)
        body = await asyncio.to_thread(render, data, frame, media, longest)
        audit(context, request, [inst], "WADO-RS rendered")
        await settle(context, [inst])
        return web.Response(body=body, content_type=media)

    async def rendered(request: web.Request) -> web.Response:
        return await answer(request, 1, None)

    async def frame_rendered(request: web.Request) -> web.Response:
        numbers = frame_numbers(request.match_info["frames"])
        if len(numbers) != 1:
            raise refusal(web.HTTPBadRequest, "one frame is rendered at a time")
        return await answer(request, numbers[0], None)

    async def thumbnail(request: web.Request) -> web.Response:
        return await answer(request, 1, THUMBNAIL)

    instance = f"{PREFIX}/studies/{{study}}/series/{{series}}/instances/{{instance}}"
    return [
        web.get(f"{instance}/rendered", rendered),
        web.get(f"{instance}/thumbnail", thumbnail),
        web.get(f"{instance}/frames/{{frames}}/rendered", frame_rendered),
    ]
