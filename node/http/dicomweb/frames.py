"""WADO-RS frames (PS3.18 10.4.1.1.4): ``frames/{list}`` cut from the stored pixel data
without decoding it: native frames by their byte offsets, encapsulated ones as their
fragments, in the stored transfer syntax. The frames' positions are found from the
header once per object (frame_index) and the frames read by seek; an object whose
layout is unusual is parsed whole instead.

Native little-endian pixel data goes out as application/octet-stream; compressed pixel
data goes out as is only to a requester that accepts that syntax (``transfer-syntax=*``,
or the stored one named), since nothing is transcoded here; big-endian pixel data,
which would need its bytes swapped, is a 406.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

from aiohttp import web
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.http.dicomweb.context import PREFIX, DicomWeb, MediaRange, accepted, matches, refusal
from node.http.dicomweb.frame_index import FrameMap, locate, read_frame
from node.http.dicomweb.wado import (
    MULTIPART,
    OCTETS,
    Multipart,
    audit,
    read_instance,
    resolve,
    set_aside,
    settle,
)
from node.index import StoredInstance
from node.storage import Storage, TamperedObject

# The media type of each compressed syntax's frames (PS3.18 Table 8.7.3-5).
_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, "1.2.840.10008.1.2.1.99"}


def frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(n) for n in text.split(",")]
    except ValueError:
        raise refusal(web.HTTPBadRequest, f"frame list {text!r} is not numbers") from None
    if not numbers or min(numbers) < 1:
        raise refusal(web.HTTPBadRequest, "frame numbers start at 1")
    return numbers


def _native_frames(ds: Dataset) -> list[bytes]:
    bits = int(ds.BitsAllocated)
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
    count = int(ds.get("NumberOfFrames", 1) or 1)
    data = bytes(ds.PixelData)
    if bits == 1:  # frames of single bits need not start on a byte: cut whole ones only
        if (pixels * count) % 8 or pixels % 8:
            raise refusal(web.HTTPNotAcceptable,
                          "frames of 1-bit pixel data not on byte boundaries are not cut")
        size = pixels // 8
    else:
        size = pixels * (bits // 8)
    return [data[n * size:(n + 1) * size] for n in range(count)]


def _encapsulated_frames(ds: Dataset) -> Iterator[bytes]:
    count = int(ds.get("NumberOfFrames", 1) or 1)
    return generate_frames(ds.PixelData, number_of_frames=count)


async def whole_file(context: DicomWeb, inst: StoredInstance,
                     numbers: list[int]) -> tuple[int, list[bytes]]:
    data = await read_instance(context, inst)
    ds = await asyncio.to_thread(dcmread, io.BytesIO(data))
    if "PixelData" not in ds:
        raise refusal(web.HTTPNotFound, "the instance has no pixel data")
    every = await asyncio.to_thread(
        lambda: _native_frames(ds) if inst.transfer_syntax_uid in _NATIVE
        else list(_encapsulated_frames(ds)))
    return len(every), [every[n - 1] for n in numbers if n <= len(every)]


def _fits(media: MediaRange, syntax: str) -> str | None:
    """The part's Content-Type when ``media`` accepts frames in ``syntax``, else None."""
    if media.type == "*/*" and not media.params:
        return OCTETS if syntax in _NATIVE else None
    if not matches(media, MULTIPART):
        return None
    wanted = media.params.get("type", OCTETS).lower()
    asked = media.params.get("transfer-syntax", "")
    if syntax in _NATIVE:
        native = asked in ("", "*", ExplicitVRLittleEndian)
        return OCTETS if wanted in (OCTETS, "*/*", "application/*") and native else None
    if not UID(syntax).is_encapsulated:
        return None
    own = _MEDIA.get(syntax, OCTETS)
    if asked not in ("*", syntax) or wanted not in (own, OCTETS, "*/*"):
        return None
    return f"{own if wanted == '*/*' else wanted}; transfer-syntax={syntax}"


def cut_frames(storage: Storage, sha256: str, known: FrameMap | None,
         numbers: list[int]) -> tuple[FrameMap | None, list[bytes]]:
    """The object's frame map and the frames ``numbers`` name read by offset (none when
    a number is past the last frame); no map when the layout is unusual."""
    with storage.open_object(sha256) as fh:
        found = known or locate(fh)
        if found is None or max(numbers) > found.count:
            return found, []
        return found, [read_frame(fh, found.frames[n - 1]) for n in numbers]


async def by_offset(context: DicomWeb, inst: StoredInstance,
                    numbers: list[int]) -> tuple[int, list[bytes]] | None:
    """(frames in the object, the frames asked for), or None to parse the whole file."""
    try:
        found, cut = await asyncio.to_thread(
            cut_frames, context.archive.storage, inst.sha256, context.frame_maps.get(inst.sha256),
            numbers)
    except TamperedObject as exc:
        raise await set_aside(context, exc) from None
    except OSError:
        return None  # the whole-file path reads again and answers the error it meets
    if found is None:
        return None
    context.frame_maps.put(inst.sha256, found)
    return found.count, cut


def routes(context: DicomWeb) -> list[web.RouteDef]:
    async def frames(request: web.Request) -> web.StreamResponse:
        numbers = frame_numbers(request.match_info["frames"])
        [inst] = await resolve(context, request.match_info)
        syntax = inst.transfer_syntax_uid
        part_type = next((t for m in accepted(request.headers.get("Accept"))
                          if (t := _fits(m, syntax))), None)
        if part_type is None:
            raise refusal(web.HTTPNotAcceptable,
                          f"frames are served in their stored transfer syntax {syntax},"
                          " not transcoded: accept it (transfer-syntax=* or that UID)")
        quick = await by_offset(context, inst, numbers)
        count, cut = quick if quick is not None else await whole_file(context, inst, numbers)
        if max(numbers) > count:
            raise refusal(web.HTTPNotFound,
                          f"the instance has {count} frame(s), not {max(numbers)}")
        response = Multipart(part_type.split(";")[0])
        await response.prepare(request)
        for frame in cut:
            await response.part(part_type, frame)
        await response.finish()
        audit(context, request, [inst], f"WADO-RS frames {len(numbers)}")
        await settle(context, [inst])
        return response

    path = (f"{PREFIX}/studies/{{study}}/series/{{series}}/instances/{{instance}}"
            "/frames/{frames}")
    return [web.get(path, frames)]
