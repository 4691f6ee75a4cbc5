"""C-FIND responses written directly: identifiers from result rows, one PDU each.

pynetdicom's C-FIND SCP encodes each pending response's identifier from a pydicom
dataset (built by ``node.query.response_identifier``): about 0.2 ms per response, a
fifth of a second for a 1,000-study answer. Every response of one query has the same
elements, so the layout is worked out once per query (:class:`IdentifierLayout`): the
elements in tag order, the constant ones already encoded by pydicom itself, and for
each row only its values are written. A value this module does not write as pydicom
would (a VR it does not know, text outside the character set) makes it answer None,
and the caller falls back to the dataset. Pure code; ``tests/test_find_encoding.py``
checks the bytes against pydicom's for both little-endian transfer syntaxes.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode

from node.dicom.direct import write_message
from node.query import UNIQUE_KEY, Query, response_identifier

# The character set every response declares (node.query.response_identifier).
CHARSET = "ISO_IR 192"
# Text VRs whose values take the declared character set (PS3.5 6.1.2.3); the others
# are ASCII only.
_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
_ROW_VRS = _CHARSET_VRS | _ASCII_VRS | {"US"}


def layout_for(query: Query, retrieve_aet: str, transfer_syntax: str) -> IdentifierLayout | None:
    """The layout for a context's transfer syntax; None for one written otherwise
    (big endian, deflated: pynetdicom encodes those from the dataset)."""
    if transfer_syntax == ImplicitVRLittleEndian:
        return IdentifierLayout(query, retrieve_aet, implicit=True)
    if transfer_syntax == ExplicitVRLittleEndian:
        return IdentifierLayout(query, retrieve_aet, implicit=False)
    return None


class EncodedIdentifier:
    """An identifier already encoded in the presentation context's transfer syntax; the
    C-FIND SCP sends ``encoded`` as it is (``node.dicom.patches``). Not a Dataset: one
    costs ~25 us to make, and pynetdicom only hands it to ``encode``."""

    __slots__ = ("encoded",)

    def __init__(self, encoded: bytes) -> None:
        self.encoded = encoded


def _header(tag: int, vr: str, length: int, implicit: bool) -> bytes:
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, length)
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)


def _value(vr: str, value: Any) -> bytes | None:
    """The value as pydicom writes it, padded to even length; None if it might not be."""
    if value is None or value == "":
        return b""
    if vr == "US":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
            return None
        return struct.pack("<H", value)
    if isinstance(value, int) and not isinstance(value, bool) and vr == "IS":
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    if vr in _CHARSET_VRS:
        raw = text.encode("utf-8")
    elif text.isascii():
        raw = text.encode("ascii")
    else:
        return None
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return raw


@dataclass(frozen=True)
class _Element:
    tag: int
    vr: str
    keyword: str  # read from the row; "" for a constant
    constant: bytes = b""  # the whole encoded element, for a constant


class IdentifierLayout:
    """How every response identifier of one query is encoded, in one transfer syntax."""

    def __init__(self, query: Query, retrieve_aet: str, implicit: bool) -> None:
        self.query = query
        self.retrieve_aet = retrieve_aet
        self.implicit = implicit
        # The constant part, encoded by pydicom from what response_identifier answers
        # for a row of no values: everything but the row's keys.
        keys = set(query.return_keys) | {UNIQUE_KEY[query.level]}
        template = response_identifier(query, {}, retrieve_aet)
        elements: list[_Element] = []
        self.valid = True
        for elem in template:
            keyword = elem.keyword or ""
            if keyword in keys:
                vr = dictionary_VR(elem.tag)
                if vr not in _ROW_VRS or tag_for_keyword(keyword) != elem.tag:
                    self.valid = False
                elements.append(_Element(int(elem.tag), vr, keyword))
            else:
                one = Dataset()
                one.add(elem)
                encoded = encode(one, implicit, True)
                if encoded is None:
                    self.valid = False
                    encoded = b""
                elements.append(_Element(int(elem.tag), elem.VR, "", encoded))
        self._elements = tuple(elements)

    def encode(self, row: Mapping[str, Any]) -> bytes | None:
        """The row's identifier as pydicom would encode it, or None (use the dataset)."""
        if not self.valid:
            return None
        parts: list[bytes] = []
        for element in self._elements:
            if not element.keyword:
                parts.append(element.constant)
                continue
            raw = _value(element.vr, row.get(element.keyword))
            if raw is None or len(raw) > 0xFFFF:
                return None
            parts.append(_header(element.tag, element.vr, len(raw), self.implicit) + raw)
        return b"".join(parts)

    def identifier(self, row: Mapping[str, Any]) -> Dataset | EncodedIdentifier:
        """What the C-FIND handler yields for the row: encoded here, or the dataset."""
        encoded = self.encode(row)
        if encoded is None:
            return response_identifier(self.query, row, self.retrieve_aet)
        return EncodedIdentifier(encoded)


# Per DIMSE provider (one per association): the last pending C-FIND-RSP command set.
_COMMANDS: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], bytes]] = (
    weakref.WeakKeyDictionary())


def send_find_rsp(dimse: DIMSEServiceProvider, primitive: C_FIND, context_id: int) -> bool:
    """Send a pending C-FIND-RSP, command set and identifier, as node/dicom/direct.py
    writes messages (pynetdicom builds both PDUs anew); False to send it as usual.
    Every pending response to one request has the same command set: pynetdicom encodes
    it once, and it is reused while the request lasts."""
    identifier = primitive.Identifier
    if (primitive.MessageIDBeingRespondedTo is None or identifier is None
            or primitive.Status not in (0xFF00, 0xFF01)
            or dimse.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
        return False
    data = identifier.getvalue()
    key = (primitive.AffectedSOPClassUID, primitive.MessageIDBeingRespondedTo,
           primitive.Status)
    cached = _COMMANDS.get(dimse)
    if cached is None or cached[0] != key:
        message = C_FIND_RSP()
        message.primitive_to_message(primitive)
        encoded = encode(message.command_set, True, True)
        if encoded is None:
            return False
        cached = _COMMANDS[dimse] = (key, encoded)
    # Straight to the socket from this thread when nothing is queued, else behind what
    # is, pynetdicom's way (node/dicom/direct.py), split to the peer's PDU size.
    write_message(dimse.assoc, context_id, cached[1], data)
    return True
