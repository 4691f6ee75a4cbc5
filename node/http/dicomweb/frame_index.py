"""Where each frame's bytes lie in a stored object, found from its header alone, so a
frame is read by seek and read instead of a parse of the whole file.

Native pixel data: the value's offset plus the frame's index times its length.
Encapsulated pixel data: the fragments' positions, grouped into frames by the Basic
Offset Table, or one fragment a frame, or all fragments for a single frame: the cases
pydicom's ``generate_frames`` decides the same way. Anything else (1-bit pixels, an
Extended Offset Table, several fragments a frame with no table, a value shorter than its
frames, big-endian data, an element that is not where the header parse stopped) gives
None, and the caller parses the whole file as before.

Offsets are in the object's plaintext: a sealed object's reader (node/at_rest.py) seeks
in plaintext and authenticates every chunk a read touches, so a frame read from a sealed
file is as checked as a whole read.
"""

from __future__ import annotations

import io
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

NATIVE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_PIXEL_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_SEQ_END = struct.pack("<HH", 0xFFFE, 0xE0DD)
_UNDEFINED = 0xFFFFFFFF

Span = tuple[int, int]  # (offset, length) in the plaintext


@dataclass(frozen=True)
class FrameMap:
    frames: tuple[tuple[Span, ...], ...]  # per frame, its pieces in order

    @property
    def count(self) -> int:
        return len(self.frames)


def read_frame(fh: BinaryIO, spans: tuple[Span, ...]) -> bytes:
    parts = []
    for offset, length in spans:
        fh.seek(offset)
        data = fh.read(length)
        if len(data) != length:
            raise OSError(f"frame bytes at {offset} end early ({len(data)} of {length})")
        parts.append(data)
    return b"".join(parts)


def locate(fh: BinaryIO) -> FrameMap | None:
    """The frames of the Part 10 object ``fh`` holds, or None when anything is unusual."""
    try:
        ds = dcmread(fh, stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, struct.error):
        return None
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if not syntax or "ExtendedOffsetTable" in ds or "Rows" not in ds:
        return None
    if syntax not in NATIVE and not UID(syntax).is_encapsulated:
        return None  # big endian, deflated: the whole-file path decides
    at = fh.tell()  # pydicom stops before the pixel data element's tag
    head = fh.read(12)
    if len(head) < 8 or head[:4] != _PIXEL_TAG:
        return None
    if syntax == ImplicitVRLittleEndian:
        (length,), value_at = struct.unpack("<I", head[4:8]), at + 8
    else:
        if len(head) < 12 or head[4:6] not in (b"OB", b"OW"):
            return None
        (length,), value_at = struct.unpack("<I", head[8:12]), at + 12
    count = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        if syntax in NATIVE:
            if length != _UNDEFINED and value_at + length > fh.seek(0, io.SEEK_END):
                return None  # cut short: the whole-file path says what is wrong
            return _native(ds, value_at, length, count)
        return _encapsulated(fh, value_at, length, count)
    except (ValueError, TypeError, AttributeError, struct.error):
        return None


def _native(ds: Dataset, value_at: int, length: int, count: int) -> FrameMap | None:
    bits = int(ds.BitsAllocated)
    if length == _UNDEFINED or bits % 8 or bits == 0:
        return None
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * (bits // 8)
    if size == 0 or size * count > length:
        return None
    return FrameMap(tuple(((value_at + n * size, size),) for n in range(count)))


def _encapsulated(fh: BinaryIO, value_at: int, length: int, count: int) -> FrameMap | None:
    if length != _UNDEFINED:
        return None
    fh.seek(value_at)
    tag, table_len = _item_head(fh)
    if tag != _ITEM or table_len % 4:
        return None
    table = struct.unpack(f"<{table_len // 4}I", fh.read(table_len)) if table_len else ()
    first = fh.tell()
    fragments: list[tuple[int, Span]] = []  # (position after the table, (offset, length))
    while True:
        at = fh.tell()
        tag, size = _item_head(fh)
        if tag == _SEQ_END:
            break
        if tag != _ITEM or size == _UNDEFINED:
            return None
        fragments.append((at - first, (at + 8, size)))
        fh.seek(at + 8 + size)
    if not fragments:
        return None
    if count == 1:
        return FrameMap((tuple(span for _, span in fragments),))
    if table:
        if len(table) != count or list(table) != sorted(table) or table[0] != 0:
            return None
        ends = [*table[1:], None]
        frames = tuple(tuple(span for pos, span in fragments
                             if pos >= start and (end is None or pos < end))
                       for start, end in zip(table, ends, strict=True))
        return FrameMap(frames) if all(frames) else None
    if len(fragments) == count:
        return FrameMap(tuple((span,) for _, span in fragments))
    return None


def _item_head(fh: BinaryIO) -> tuple[bytes, int]:
    head = fh.read(8)
    if len(head) != 8:
        raise ValueError("encapsulated pixel data ends early")
    return head[:4], struct.unpack("<I", head[4:])[0]


class FrameMaps:
    """Frame maps of recently served objects, by SHA-256: an object never changes, so
    an entry is never stale; bounded by count (an entry is a few dozen bytes a frame)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._maps: OrderedDict[str, FrameMap] = OrderedDict()

    def get(self, sha256: str) -> FrameMap | None:
        hit = self._maps.get(sha256)
        if hit is not None:
            self._maps.move_to_end(sha256)
        return hit

    def put(self, sha256: str, frames: FrameMap) -> None:
        self._maps[sha256] = frames
        while len(self._maps) > self.limit:
            self._maps.popitem(last=False)
