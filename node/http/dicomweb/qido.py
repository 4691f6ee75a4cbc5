"""QIDO-RS (PS3.18 10.6): query parameters become a C-FIND identifier, matched by the
one C-FIND matcher (node.query), answered in DICOM JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from node.audit import Action, Outcome
from node.dicom.statuses import exact_key
from node.http.dicomweb.context import (
    DICOM_JSON,
    PREFIX,
    DicomWeb,
    accepted,
    json_answer,
    matches,
    refusal,
)
from node.http.dicomweb.dicom_json import element_json
from node.query import ATTRS, COMPUTED, LEVELS, UNIQUE_KEY, Query, QueryError, parse_identifier

log = logging.getLogger(__name__)
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_DA = re.compile(r"\d{8}")
_TM = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_CONTROL = {"limit", "offset", "fuzzymatching", "includefield"}

# What each level answers without includefield (PS3.18 Table 10.6.3-3), with the
# unique keys of the levels above, which a client needs to retrieve what it found.
DEFAULTS: dict[str, tuple[str, ...]] = {
    "STUDY": ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
              "ReferringPhysicianName", "PatientName", "PatientID", "StudyInstanceUID",
              "StudyID", "PatientBirthDate", "PatientSex", "StudyDescription",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "SERIES": ("StudyInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
               "SeriesInstanceUID", "SeriesDate", "SeriesTime", "BodyPartExamined",
               "NumberOfSeriesRelatedInstances"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID",
              "InstanceNumber", "Rows", "Columns", "NumberOfFrames"),
}


class BadQuery(ValueError):
    """A query parameter that cannot be understood (answered 400 with the reason)."""


@dataclass(frozen=True)
class Search:
    query: Query
    identifier: Dataset
    limit: int | None
    offset: int
    # What the answer ignored (PS3.18 8.3.4: told in a Warning header, not refused).
    warnings: tuple[str, ...] = ()


def _keyword(name: str) -> str:
    """An attribute named by keyword or by 8-hex tag; BadQuery when neither."""
    if _HEX_TAG.fullmatch(name):
        keyword = keyword_for_tag(int(name, 16))
        if not keyword:
            raise BadQuery(f"attribute {name} is not in the DICOM dictionary")
        return keyword
    if tag_for_keyword(name) is None:
        raise BadQuery(f"unknown attribute {name!r}")
    return name


def _checked(keyword: str, value: str) -> str:
    """The value in DIMSE form (UID lists with backslashes); BadQuery for a value the
    attribute's VR cannot hold."""
    vr = dictionary_VR(keyword)
    if vr == "UI":
        return "\\".join(u.strip() for u in value.replace("\\", ",").split(","))
    if vr in ("DA", "TM"):
        pattern = _DA if vr == "DA" else _TM
        ends = [e.strip() for e in value.split("-")]
        if len(ends) > 2 or not any(ends) or not all(
                pattern.fullmatch(e) for e in ends if e):
            raise BadQuery(f"{keyword}={value!r} is not a {vr} value or range")
    return value


def _wanted(values: Iterable[str], level: str) -> list[str]:
    wanted: list[str] = []
    for item in values:
        for name in (n.strip() for n in item.split(",")):
            if not name:
                continue
            if name == "all":
                depth = LEVELS.index(level)
                wanted += [k for k, a in ATTRS.items() if LEVELS.index(a.level) <= depth]
                # The counts of the level itself, and the study's modalities below it.
                wanted += [k for k, (lv, _) in COMPUTED.items()
                           if lv == level or (k == "ModalitiesInStudy" and depth >= 1)]
            else:
                wanted.append(_keyword(name))
    return wanted


def _defaults(level: str, fixed: Mapping[str, str]) -> list[str]:
    """A level's default keys, and those of the levels above that the path does not
    name (PS3.18 10.6.3.3: a search of all series answers study attributes too), less
    the counts, which are answered at their own level only."""
    keys = list(DEFAULTS[level])
    above = {"SERIES": ["STUDY"], "IMAGE": ["STUDY", "SERIES"]}.get(level, [])
    for upper in above:
        if UNIQUE_KEY[upper] not in fixed:
            keys += [k for k in DEFAULTS[upper] if k not in keys
                     and (k not in COMPUTED or k == "ModalitiesInStudy")]
    return keys


def _count(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadQuery(f"{name}={raw!r} is not a non-negative integer")
    return int(raw)


def parse_search(level: str, fixed: Mapping[str, str],
                 params: Iterable[tuple[str, str]]) -> Search:
    """``fixed``: the UIDs the path names; ``params``: the query string, in order."""
    pairs = list(params)
    control = {k: v for k, v in pairs if k in ("limit", "offset")}
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in _defaults(level, fixed):
        setattr(ds, keyword, "")
    for keyword in _wanted((v for k, v in pairs if k == "includefield"), level):
        if keyword not in ds:
            ds.add_new(keyword, dictionary_VR(keyword), None)
    ignored: list[str] = []
    for name, value in pairs:
        if name in _CONTROL:
            continue
        if "." in name:
            raise BadQuery(f"sequence matching ({name}) is not supported")
        keyword = _keyword(name)
        vr = dictionary_VR(keyword)
        if vr == "SQ":
            raise BadQuery(f"sequence matching ({name}) is not supported")
        ds.add_new(keyword, vr, _checked(keyword, value) or None)
        attr = ATTRS.get(keyword)
        if value and keyword != "ModalitiesInStudy" and (
                attr is None or LEVELS.index(attr.level) > LEVELS.index(level)):
            ignored.append(f"{keyword} is not supported for matching at this level and"
                           " was ignored")
    if any(k == "fuzzymatching" and v.lower() == "true" for k, v in pairs):
        ignored.append("fuzzy matching is not supported: names matched case-insensitively")
    for keyword, uid in fixed.items():
        setattr(ds, keyword, uid)
    try:
        query = parse_identifier(ds)
    except QueryError as exc:
        raise BadQuery(str(exc)) from None
    return Search(query, ds, _count(control, "limit"), _count(control, "offset") or 0,
                  tuple(ignored))


def answer(search: Search, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One DICOM JSON object per row, after offset and limit, with the keys the query
    returns: empty ones without a value, unknown ones empty, keys in tag order."""
    end = None if search.limit is None else search.offset + search.limit
    keys = []
    for keyword in search.query.return_keys:
        tag = tag_for_keyword(keyword)
        if tag is not None:
            keys.append((keyword, int(tag), dictionary_VR(keyword)))
    unknown = []
    for tag in search.query.unknown_keys:
        try:
            unknown.append((int(tag), dictionary_VR(tag)))
        except KeyError:
            continue
    out = []
    for row in rows[search.offset:end]:
        one: dict[int, dict[str, Any]] = {}
        for keyword, number, vr in keys:
            value = row.get(keyword)
            if keyword == "ModalitiesInStudy" and not value:
                continue  # non-empty or absent (PS3.18 F.2)
            one[number] = element_json(number, vr, value)
        for number, vr in unknown:
            one[number] = {"vr": vr}
        out.append({f"{t:08X}": one[t] for t in sorted(one)})
    return out


def _fixed(request: web.Request) -> dict[str, str]:
    info = request.match_info
    names = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}
    return {keyword: info[key] for key, keyword in names.items() if key in info}


def routes(web_ctx: DicomWeb) -> list[web.RouteDef]:
    async def search(request: web.Request, level: str) -> web.Response:
        if not any(matches(m, DICOM_JSON) or matches(m, "application/json")
                   for m in accepted(request.headers.get("Accept"))):
            raise refusal(web.HTTPNotAcceptable,
                          "QIDO-RS answers application/dicom+json only")
        try:
            found = parse_search(level, _fixed(request), request.query.items())
        except BadQuery as exc:
            web_ctx.record(request, Action.QUERY, Outcome.REFUSED, str(exc))
            raise refusal(web.HTTPBadRequest, str(exc)) from None
        index = web_ctx.archive.index
        mesh = web_ctx.mesh
        if web_ctx.over_mesh and level == "IMAGE" and mesh is not None:
            # As C-FIND: instance attributes of studies held elsewhere come from a holder.
            rows = await mesh.image_rows(found.query, found.identifier, "STUDY")
        else:
            rows = await index.find(found.query, mesh=web_ctx.over_mesh)
        # Off the loop: 10,000 studies are ~1 s of encoding, and the loop owns the index.
        body = await asyncio.to_thread(lambda: json.dumps(answer(found, rows)).encode())
        log.info("QIDO-RS at %s level: %d match(es)", level, len(rows))
        web_ctx.record(request, Action.QUERY, Outcome.SUCCESS,
                       f"{level} level, {len(rows)} match(es)",
                       patient_id=exact_key(found.identifier, "PatientID"),
                       study_uid=exact_key(found.identifier, "StudyInstanceUID"))
        response = json_answer(body)
        for text in found.warnings:
            response.headers.add("Warning", f'299 {request.host}: "{text}"')
        return response

    def at(level: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return await search(request, level)
        return handler

    p = PREFIX
    return [
        web.get(f"{p}/studies", at("STUDY")),
        web.get(f"{p}/series", at("SERIES")),
        web.get(f"{p}/instances", at("IMAGE")),
        web.get(f"{p}/studies/{{study}}/series", at("SERIES")),
        web.get(f"{p}/studies/{{study}}/instances", at("IMAGE")),
        web.get(f"{p}/studies/{{study}}/series/{{series}}/instances", at("IMAGE")),
    ]
