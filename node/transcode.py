"""Choose how to send a stored instance to a peer that accepted some transfer syntaxes.

The stored bytes go out untouched whenever the peer accepted their transfer syntax.
Otherwise uncompressed encodings are converted by pynetdicom, and compressed ones are
decoded here with pydicom's pixel handlers (pylibjpeg, openjpeg, libjpeg, RLE).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

UNCOMPRESSED = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
     DeflatedExplicitVRLittleEndian}
)
# Encodings pynetdicom converts between on its own (re-encoding the data set).
_CONVERTIBLE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                          DeflatedExplicitVRLittleEndian})


class Plan(enum.Enum):
    AS_STORED = "as-stored"  # stream the file's bytes
    REENCODE = "re-encode"  # uncompressed -> another uncompressed encoding
    DECOMPRESS = "decompress"  # compressed -> explicit VR little endian
    IMPOSSIBLE = "impossible"


class TranscodeError(ValueError):
    """The instance cannot be turned into anything the peer accepted."""


def choose_plan(stored_ts: str, accepted: Iterable[str]) -> Plan:
    accepted = set(accepted)
    if stored_ts in accepted:
        return Plan.AS_STORED
    if not accepted & _CONVERTIBLE:
        return Plan.IMPOSSIBLE
    if stored_ts in _CONVERTIBLE:
        return Plan.REENCODE
    if stored_ts == ExplicitVRBigEndian:
        return Plan.REENCODE
    return Plan.DECOMPRESS


def prepare(path: Path, plan: Plan) -> str | Dataset:
    """What to hand to ``send_c_store``: the file path, or a decoded data set."""
    if plan is Plan.AS_STORED:
        return str(path)
    if plan is Plan.IMPOSSIBLE:
        raise TranscodeError("the peer accepted no transfer syntax this instance can be sent in")
    try:
        ds = dcmread(path)
        if plan is Plan.DECOMPRESS:
            ds.decompress(generate_instance_uid=False)
        elif ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian:
            _to_little_endian(ds)
    except Exception as exc:
        raise TranscodeError(f"cannot decode: {type(exc).__name__}: {exc}") from exc
    return ds


def _to_little_endian(ds: Dataset) -> None:
    """Decode every element so pynetdicom can write it little endian."""
    for elem in ds.iterall():
        _ = elem.value  # converts raw big-endian elements into values
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_original_encoding(False, True)


# Explicit VR elements whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
     b"UV"})
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
     b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xE000FFFE, 0xE00DFFFE, 0xE0DDFFFE  # tags read as "<I"


class _NotPlain(Exception):
    """Something the byte converter leaves to pydicom."""


def explicit_to_implicit(data: bytes | memoryview) -> bytes | None:
    """An Explicit VR Little Endian data set re-encoded as Implicit VR Little Endian,
    without decoding a value (:func:`explicit_to_implicit_parts`, joined)."""
    parts = explicit_to_implicit_parts(data)
    return None if parts is None else b"".join(parts)


def explicit_to_implicit_parts(data: bytes | memoryview) -> list[bytes | memoryview] | None:
    """The Implicit VR Little Endian re-encoding of an Explicit VR Little Endian data
    set, in parts to send one after the other: large values are views of ``data``, not
    copies. Each element header loses its VR, sequences and items keep their defined
    or undefined lengths (defined ones recomputed) and group lengths are left out, as
    pydicom writes them; values keep their bytes (pydicom re-encodes the values it
    decodes, e.g. dropping a space inside a multi-valued CS). None for what it does not
    follow (an undefined-length element that is not a sequence, an unknown VR, a
    truncated data set): pydicom then decodes it."""
    out = _Parts()
    try:
        end = _elements(memoryview(data), 0, len(data), out, in_item=False)
    except (_NotPlain, struct.error):
        return None
    return out.close() if end == len(data) else None


class _Parts:
    """Small pieces joined, large values (pixel data) kept as views."""

    LARGE = 64 * 1024

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.tail = bytearray()

    def add(self, piece: bytes | bytearray | memoryview) -> None:
        if isinstance(piece, memoryview) and len(piece) >= self.LARGE:
            self.close()
            self.parts.append(piece)
        else:
            self.tail += piece

    def close(self) -> list[bytes | memoryview]:
        if self.tail:
            self.parts.append(bytes(self.tail))
            self.tail = bytearray()
        return self.parts


def _put(out: bytearray | _Parts, piece: bytes | bytearray | memoryview) -> None:
    if isinstance(out, _Parts):
        out.add(piece)
    else:
        out += piece


def _elements(view: memoryview, pos: int, end: int, out: bytearray | _Parts,
              in_item: bool) -> int:
    """Convert elements from ``pos`` up to ``end`` (or, in an undefined-length item, its
    delimiter, which is copied); return where it stopped."""
    while pos < end:
        tag = struct.unpack_from("<I", view, pos)[0]
        if tag == _ITEM_END and in_item:
            _put(out, view[pos:pos + 8])
            return pos + 8
        vr = bytes(view[pos + 4:pos + 6])
        if vr in _SHORT_VRS:
            length = struct.unpack_from("<H", view, pos + 6)[0]
            start = pos + 8
        elif vr in _LONG_VRS:
            length = struct.unpack_from("<I", view, pos + 8)[0]
            start = pos + 12
        else:
            raise _NotPlain(vr)
        if vr == b"SQ":
            pos = _sequence(view, tag, start, length, out)
            continue
        if length == _UNDEFINED or start + length > end:
            raise _NotPlain("undefined length")
        if tag >> 16:  # group lengths would be wrong once headers shrink: pydicom drops them
            _put(out, struct.pack("<II", tag, length))
            _put(out, view[start:start + length])
        pos = start + length
    if in_item and pos != end:
        raise _NotPlain("item overrun")
    return pos


def _sequence(view: memoryview, tag: int, start: int, length: int,
              out: bytearray | _Parts) -> int:
    body = bytearray()
    pos = start
    stop = len(view) if length == _UNDEFINED else start + length
    while pos < stop:
        item_tag, item_length = struct.unpack_from("<II", view, pos)
        if item_tag == _SEQUENCE_END and length == _UNDEFINED:
            body += view[pos:pos + 8]
            pos += 8
            break
        if item_tag != _ITEM:
            raise _NotPlain("not an item")
        content = bytearray()
        if item_length == _UNDEFINED:
            pos = _elements(view, pos + 8, stop, content, in_item=True)
        else:
            _elements(view, pos + 8, pos + 8 + item_length, content, in_item=False)
            pos += 8 + item_length
        body += struct.pack("<II", item_tag, item_length if item_length == _UNDEFINED
                            else len(content))
        body += content
    else:
        if length == _UNDEFINED:
            raise _NotPlain("sequence without its delimiter")
    if pos != stop and length != _UNDEFINED:
        raise _NotPlain("sequence overrun")
    _put(out, struct.pack("<II", tag, length if length == _UNDEFINED else len(body)))
    _put(out, body)
    return pos
