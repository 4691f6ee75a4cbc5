"""Modality Worklist matching (PS3.4 K.6.1, C.2.2.2): an identifier to a query, a worklist
item to its data set, and the data sets a query returns. Pure: no I/O, no pynetdicom.

Matching keys at the top level and inside the one item of the Scheduled Procedure Step
Sequence: single value (with ``*`` and ``?`` for the string VRs), universal (empty), date
and time ranges (``a-b``, ``-b``, ``a-``; date and time matched each on its own, as
without combined date-time matching), and person names with wildcards, case and accents
folded as C-FIND folds them (node.query). Only the keys asked for are returned; a key
asked for that an item does not hold is returned empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from node.query import pn_fold, pn_match
from node.worklist.current import Item
from node.worklist.events import Status

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
IDENTIFIER_MISMATCH = 0xA900  # the identifier does not match the SOP class
CANNOT_UNDERSTAND = 0xC000  # unable to process

SPS = "ScheduledProcedureStepSequence"
TOP_KEYS = ("AccessionNumber", "PatientName", "PatientID", "IssuerOfPatientID",
            "PatientBirthDate", "PatientSex", "StudyInstanceUID", "RequestedProcedureID",
            "RequestedProcedureDescription", "ReferringPhysicianName")
STEP_KEYS = ("ScheduledStationAETitle", "Modality", "ScheduledProcedureStepStartDate",
             "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
             "ScheduledProcedureStepID", "ScheduledProcedureStepDescription",
             "ScheduledProcedureStepStatus")
# An item's status as the Scheduled Procedure Step Status (0040,0020) shows it.
STEP_STATUS = {Status.SCHEDULED: "SCHEDULED", Status.ARRIVED: "ARRIVED",
               Status.IN_PROGRESS: "STARTED"}
_SPS_TAG = 0x00400100
_ITEM_TAGS = (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")  # (FFFE,E000), little/big endian
_WILDCARD_VRS = {"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT"}
_RANGE_VRS = {"DA", "TM", "DT"}
_CONTROL = {"SpecificCharacterSet", "QueryRetrieveLevel"}


class WorklistQueryError(ValueError):
    """An identifier the worklist cannot take: the status to answer it with."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass(frozen=True)
class WorklistQuery:
    top: dict[str, str]  # keyword -> query value ("" universal) for the top-level keys
    steps: dict[str, str] | None  # the same inside the SPS item; None: not asked for
    others: tuple[str, ...] = ()  # other keywords asked for: returned empty


def _text(elem: DataElement) -> str:
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, list | tuple):  # a multi-valued key: its values as sent
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _keys(ds: Dataset, where: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for elem in ds:
        if elem.keyword in _CONTROL or not elem.keyword:
            continue
        if elem.VR == "SQ" and elem.keyword != SPS:
            if elem.value and len(elem.value) > 1:
                raise WorklistQueryError(IDENTIFIER_MISMATCH,
                                         f"{where}{elem.keyword} has more than one item")
            keys[elem.keyword] = ""
            continue
        keys[elem.keyword] = _text(elem)
    return keys


def parse_query(identifier: Dataset) -> WorklistQuery:
    """The query of a C-FIND identifier; raises :class:`WorklistQueryError` for one
    that is malformed (0xA900) or cannot be read (0xC000)."""
    raw = identifier.get_item(_SPS_TAG) if _SPS_TAG in identifier else None
    if isinstance(raw, RawDataElement) and raw.VR in (None, "SQ") and raw.value \
            and bytes(raw.value[:4]) not in _ITEM_TAGS:
        # pydicom reads a sequence that does not begin with an item leniently, as
        # something: it is not a sequence the sender meant.
        raise WorklistQueryError(CANNOT_UNDERSTAND, f"{SPS} does not decode")
    try:
        top = _keys(identifier, "")
        steps: dict[str, str] | None = None
        if SPS in identifier:
            elem = identifier[SPS]
            if elem.VR != "SQ" or not isinstance(elem.value, Sequence):
                raise WorklistQueryError(IDENTIFIER_MISMATCH, f"{SPS} is not a sequence")
            if len(elem.value) > 1:
                raise WorklistQueryError(IDENTIFIER_MISMATCH,
                                         f"{SPS} has {len(elem.value)} items, not one")
            steps = _keys(elem.value[0], f"{SPS} > ") if elem.value else {}
            top.pop(SPS, None)
    except WorklistQueryError:
        raise
    except Exception as exc:  # an element that does not decode
        raise WorklistQueryError(CANNOT_UNDERSTAND,
                                 f"unreadable identifier: {type(exc).__name__}") from None
    for keyword, value in [*top.items(), *(steps or {}).items()]:
        vr = _vr(keyword)
        if vr in _RANGE_VRS and value and not re.fullmatch(r"[0-9.:+ ]*-?[0-9.:+ ]*", value):
            raise WorklistQueryError(IDENTIFIER_MISMATCH, f"{keyword} is not a date or range")
    others = tuple(k for k in top if k not in TOP_KEYS)
    return WorklistQuery({k: v for k, v in top.items() if k in TOP_KEYS},
                         None if steps is None else steps, others)


def _vr(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return dictionary_VR(tag) if tag is not None else "UN"


def item_dataset(item: Item) -> Dataset:
    """An item as a worklist data set: every value it holds."""
    ds = Dataset()
    values = {"AccessionNumber": item.accession, "PatientID": item.patient.id,
              **{k: v for k, v in item.fields.items() if k in TOP_KEYS}}
    namespace = item.patient.issuer.split("&", 1)[0]
    if namespace:
        values["IssuerOfPatientID"] = namespace
    for keyword in TOP_KEYS:
        if keyword in values:
            setattr(ds, keyword, values[keyword])
    step = Dataset()
    for keyword in STEP_KEYS:
        value = item.fields.get(keyword)
        if keyword == "ScheduledProcedureStepStatus":
            value = STEP_STATUS.get(item.status)
        if value:
            setattr(step, keyword, value)
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def _bound(text: str, vr: str, upper: bool) -> str:
    """A date or time as compared: times without separators or fraction, to the second,
    an upper bound's missing digits as high as they go."""
    if vr != "TM":
        return text
    digits = text.replace(":", "").split(".", 1)[0]
    return (digits + ("995959" if upper else "000000")[len(digits):])[:6]


def _range(value: str, query: str, vr: str) -> bool:
    low, dash, high = query.partition("-")
    probe = _bound(value, vr, upper=False)
    if not dash:
        return probe == _bound(query, vr, upper=False)
    return (not low or probe >= _bound(low, vr, upper=False)) and \
        (not high or probe <= _bound(high, vr, upper=True))


def _match(keyword: str, value: str, query: str) -> bool:
    if not query:
        return True
    vr = _vr(keyword)
    if vr == "PN":
        return pn_match(value, pn_fold(query))
    if not value:
        return False
    if vr in _RANGE_VRS:
        return _range(value, query, vr)
    if vr in _WILDCARD_VRS and ("*" in query or "?" in query):
        pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                          for c in query)
        return re.fullmatch(pattern, value, re.DOTALL) is not None
    if "\\" in query and vr in ("CS", "AE", "SH", "LO"):  # a list of values: any one
        return value in query.split("\\")
    return value == query


def _value(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "")


def matches(query: WorklistQuery, ds: Dataset) -> bool:
    if not all(_match(k, _value(ds, k), v) for k, v in query.top.items()):
        return False
    step = ds.ScheduledProcedureStepSequence[0]
    return all(_match(k, _value(step, k), v) for k, v in (query.steps or {}).items())


def _project(source: Dataset, keys: Iterable[str]) -> Dataset:
    out = Dataset()
    for keyword in keys:
        if keyword in source:
            out[keyword] = source[keyword]
        else:
            tag = tag_for_keyword(keyword)
            if tag is not None:
                vr = dictionary_VR(tag)
                out.add_new(tag, vr, [] if vr == "SQ" else None)
    return out


def response(query: WorklistQuery, ds: Dataset) -> Dataset:
    """The identifier returned for a matching item: only the keys asked for."""
    out = _project(ds, [*query.top, *query.others])
    if query.steps is not None:
        step = ds.ScheduledProcedureStepSequence[0]
        wanted = list(query.steps) or [k for k in STEP_KEYS if k in step]
        out.ScheduledProcedureStepSequence = [_project(step, wanted)]
    if any(e.VR not in ("SQ", "UN") and e.value is not None and not str(e.value).isascii()
           for e in out.iterall()):
        out.SpecificCharacterSet = "ISO_IR 192"
    return out


def find(query: WorklistQuery, items: Iterable[Item],
         present: Callable[[Dataset], object] | None = None) -> list[Dataset]:
    """The responses for the items the worklist shows that match, in accession order.
    ``present`` gives a data set its patient's current identity in place (the seam
    C-FIND's coercion uses, node.patients); it is matched as presented."""
    out = []
    for item in sorted(items, key=lambda i: i.accession):
        if item.hidden:
            continue
        ds = item_dataset(item)
        if present is not None:
            present(ds)
            if "OriginalAttributesSequence" in ds:
                del ds.OriginalAttributesSequence  # not a worklist key
        if matches(query, ds):
            out.append(response(query, ds))
    return out
