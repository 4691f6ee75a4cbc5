"""Data sets as DICOM JSON (PS3.18 F.2), with bulk data as relative BulkDataURIs.

pydicom's encoder already keeps the model's rules (8-hex keys in tag order, ``vr``,
``Value`` arrays, PN as ``{"Alphabetic": ...}``, IS/DS as numbers, no ``Value`` for an
empty element); this module adds what PS3.18 asks of an origin server on top.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

# Values at or above this many bytes are bulk data in a metadata answer; PixelData and
# its kin always are, whatever their size (a viewer fetches them as frames or bulkdata).
BULK_THRESHOLD = 1024
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


def to_json(ds: Dataset) -> dict[str, Any]:
    """A query answer: no bulk data is ever in one, so every value is inline."""
    answer: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=2**31)
    return answer


# Value representations whose single, trimmed text value pydicom's encoder writes as it
# is (a backslash, a multi-value, is left to pydicom).
_TEXT_AS_IS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UI"})
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "UL", "US"})


def element_json(tag: int, vr: str, value: Any) -> dict[str, Any]:
    """What ``to_json`` writes for one element of a query answer, without building
    the element in the common cases: a search of 10,000 studies spent 90 % of its time
    in pydicom's data sets (py-spy). Anything else goes through pydicom."""
    if value is None or value == "":
        return {"vr": vr}
    if type(value) is str and "\\" not in value and value == value.strip():
        if vr in _TEXT_AS_IS:
            return {"vr": vr, "Value": [value]}
        if vr == "PN" and "=" not in value:
            return {"vr": vr, "Value": [{"Alphabetic": value}]}
    elif type(value) is int and vr in _INTEGER_VRS:
        return {"vr": vr, "Value": [value]}
    answer: dict[str, Any] = DataElement(tag, vr, value).to_json_dict(
        bulk_data_element_handler=None, bulk_data_threshold=2**31)
    return answer


def is_bulk(elem: DataElement) -> bool:
    return int(elem.tag) in PIXEL_TAGS or (
        elem.VR in BULK_VRS and elem.value is not None and len(elem.value) >= BULK_THRESHOLD)


# An element's JSON by what it is made of, shared by the instances of one build.
Memo = dict[tuple[Any, ...], dict[str, Any]]


def _memo_key(raw: object, charset: str) -> tuple[Any, ...] | None:
    """What a top-level element's JSON depends on, when that is only its own bytes and
    the data set's character set: explicit VR, neither a sequence, UN (pydicom may read
    it by a dictionary, private ones by their creator), nor long enough to be bulk data
    (its URI names the instance). None otherwise: the element is converted each time."""
    if not isinstance(raw, RawDataElement) or raw.VR in (None, "SQ", "UN"):
        return None
    tag = int(raw.tag)
    if raw.value is None or len(raw.value) >= BULK_THRESHOLD or tag in PIXEL_TAGS:
        return None
    return (tag, raw.VR, raw.value, raw.is_little_endian, raw.is_implicit_VR, charset)


def metadata_json(ds: Dataset, base_uri: str, memo: Memo | None = None) -> dict[str, Any]:
    """An instance's metadata; binary values past the threshold become BulkDataURIs
    relative to the instance (``base_uri`` ends with the instance's path), named by
    their path: tags, and item numbers inside sequences (see :func:`element_at`).

    ``memo``, shared across the instances of a series, reuses the JSON of elements
    whose bytes an earlier instance had: most of a series' header is the same in each
    instance, and converting it was ~70 % of a metadata build (py-spy)."""
    charset = repr(ds.get("SpecificCharacterSet")) if memo is not None else ""
    shared: Memo = {} if memo is None else memo

    def walk(dataset: Dataset, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for tag in sorted(dataset.keys()):
            key = f"{int(tag):08X}"
            found = None if memo is None or prefix else _memo_key(dataset.get_item(tag),
                                                                  charset)
            if found is not None and found in shared:
                out[key] = shared[found]
                continue
            elem = dataset[tag]
            if elem.VR == "SQ":
                items = [walk(item, f"{prefix}{key}/{n}/") for n, item in enumerate(elem.value)]
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            elif is_bulk(elem):
                out[key] = {"vr": elem.VR, "BulkDataURI": f"{base_uri}/bulkdata/{prefix}{key}"}
            else:
                out[key] = elem.to_json_dict(bulk_data_element_handler=None,
                                             bulk_data_threshold=2**31)
                if found is not None:
                    shared[found] = out[key]
        return out

    return walk(ds, "")


def element_at(ds: Dataset, path: str) -> DataElement | None:
    """The bulk data element a BulkDataURI's path names (``7FE00010``,
    ``00540016/0/00181074``), or None."""
    steps = path.strip("/").split("/")
    if len(steps) % 2 == 0:
        return None
    current: Dataset = ds
    try:
        for n in range(0, len(steps) - 1, 2):
            items = current[int(steps[n], 16)].value
            current = items[int(steps[n + 1])]
        elem = current[int(steps[-1], 16)]
    except (KeyError, ValueError, IndexError, TypeError):
        return None
    return elem if elem.VR != "SQ" and is_bulk(elem) else None
