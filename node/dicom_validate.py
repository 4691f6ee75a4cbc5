"""Is a received Part 10 object whole? Every declared length satisfied, its UIDs valid.

Pure code: bytes or a seekable binary file in; nothing, or an :class:`InvalidDataset`
subclass saying why, out. It walks element headers with ``struct`` and skips values
without reading them (seeking on a file), so a multi-GB object costs a few thousand
header reads. Explicit and implicit VR little endian and explicit VR big endian are
walked as they are; a deflated data set is inflated as a stream, holding one chunk.

What is accepted as it is (stored bytes are never rewritten: their SHA-256 is their
name): a Data Set Trailing Padding element (FFFC,FFFC), NUL bytes after the last
element, odd value lengths, UIDs padded with a trailing NUL or space, and a data set
whose VR encoding differs from its transfer syntax's (pydicom reads those too). What is
refused: a value, item or fragment longer than what follows it, a sequence or item
without its delimiter, an item crossing its sequence's end, any other byte after the
last element, and an identifying UID that PS3.5 9.1 does not allow.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.datadict import DicomDictionary

from node.dicom_header import InvalidDataset


class TruncatedDataset(InvalidDataset):
    """The object ends before what it declares (a value, an item, a delimiter)."""


class MalformedDataset(InvalidDataset):
    """The object's structure is broken (bad item, bad length, bytes past the end)."""


class NotPart10(MalformedDataset):
    """No preamble and DICM prefix: not a DICOM file at all (import skips these)."""


class InvalidUID(InvalidDataset):
    """An identifying UID is missing, not a valid UID, or disagrees with the file meta."""


class MissingUID(InvalidUID):
    """No SOP Instance UID (or another identifying UID): not an instance at all, such as
    a DICOMDIR (import skips these, as it skips non-DICOM files)."""


UNDEFINED = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
MEDIA_SOP_INSTANCE, TRANSFER_SYNTAX = 0x00020003, 0x00020010
# The UIDs an archive files an instance under (PS3.5 9.1 applies to each).
IDENTIFYING = {0x00080016: "SOPClassUID", 0x00080018: "SOPInstanceUID",
               0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID"}
IMPLICIT_LE, EXPLICIT_BE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
DEFLATED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"}
# VRs whose explicit header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
MAX_DEPTH = 32  # nested sequences; deeper is an attack on the walker, not an image
_CHUNK = 1 << 16
_MAX_UID_BYTES = 256  # a longer value is refused without being read


def uid_problem(raw: bytes) -> str | None:
    """Why ``raw`` (a UI value as stored) is not a valid UID, or None if it is."""
    value = raw.rstrip(b"\0 ")
    if not value:
        return "is empty"
    if len(value) > 64:
        return f"is {len(value)} characters (UI allows 64)"
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return "has non-ASCII characters"
    if _UID.fullmatch(text) is None:
        return "is not digits and dots without empty components or leading zeros"
    return None


@dataclass(frozen=True)
class _Encoding:
    explicit: bool
    little: bool

    @property
    def tag_length(self) -> struct.Struct:
        return _LE_TAG_LEN if self.little else _BE_TAG_LEN


_LE_TAG_LEN, _BE_TAG_LEN = struct.Struct("<HHI"), struct.Struct(">HHI")
_IMPLICIT = _Encoding(explicit=False, little=True)


class _Short(Exception):
    """The stream ended ``missing`` bytes (or an unknown number, -1) before a read."""


class _Stream:
    """Reads and skips over a seekable file (a BytesIO over received bytes, a file on
    disk, an unsealing reader) in chunks, knowing its size."""

    def __init__(self, fh: BinaryIO, start: int, size: int) -> None:
        self._fh = fh
        self.pos = start
        self.size = size
        self._buf = b""
        self._buf_at = start

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes at the position, not consumed."""
        off = self.pos - self._buf_at
        if off < 0 or off + n > len(self._buf):
            self._fh.seek(self.pos)
            self._buf = self._fh.read(max(n, _CHUNK))
            self._buf_at, off = self.pos, 0
        return self._buf[off:off + n]

    def read(self, n: int) -> bytes:
        if self.pos + n > self.size:
            raise _Short(self.size - self.pos)
        data = self.peek(n)
        if len(data) < n:  # the file shrank under us, or a reader that lies
            raise _Short(len(data))
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _Short(self.size - self.pos)
        self.pos += n

    def at_end(self) -> bool:
        return self.pos >= self.size

    def rest_is_zero(self) -> bool:
        """Consume the rest if it is all NUL bytes; else leave the position alone."""
        start = self.pos
        while self.pos < self.size:
            data = self.peek(min(_CHUNK, self.size - self.pos))
            if not data or data.count(0) != len(data):
                self.pos = start
                return False
            self.pos += len(data)
        return True


class _Inflating:
    """The same reads over a raw-deflate (RFC 1951) stream, inflated chunk by chunk."""

    def __init__(self, fh: BinaryIO, start: int) -> None:
        fh.seek(start)
        self._fh = fh
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = bytearray()
        self.pos = 0

    def _more(self) -> bool:
        """Inflate more into the buffer; False at the end of the deflated stream."""
        while not self._inflate.eof:
            data = self._inflate.unconsumed_tail or self._fh.read(_CHUNK)
            if not data:
                raise TruncatedDataset("deflated data set ends inside its compressed stream")
            try:
                out = self._inflate.decompress(data, _CHUNK)
            except zlib.error as exc:
                raise MalformedDataset(f"deflated data set does not inflate: {exc}") from None
            if out:
                self._buf += out
                return True
        return False

    def peek(self, n: int) -> bytes:
        while len(self._buf) < n and self._more():
            pass
        return bytes(self._buf[:n])

    def read(self, n: int) -> bytes:
        data = self.peek(n)
        if len(data) < n:
            raise _Short(len(data))
        del self._buf[:n]
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        while n:
            if not self._buf and not self._more():
                raise _Short(-1)
            step = min(n, len(self._buf))
            del self._buf[:step]
            self.pos += step
            n -= step

    def at_end(self) -> bool:
        if self._buf or self._more():
            return False
        # Past the compressed stream: only NUL padding may follow it.
        rest = self._inflate.unused_data
        while True:
            if rest.count(0) != len(rest):
                raise MalformedDataset("bytes follow the deflated data set")
            rest = self._fh.read(_CHUNK)
            if not rest:
                return True

    def rest_is_zero(self) -> bool:
        while True:
            if self._buf.count(0) != len(self._buf):
                return False
            self.pos += len(self._buf)
            self._buf.clear()
            if self.at_end():
                return True


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Walker:
    def __init__(self, stream: _Stream | _Inflating) -> None:
        self.s = stream
        self.found: dict[int, bytes] = {}
        self.too_long: dict[int, int] = {}

    def read(self, n: int, what: str) -> bytes:
        try:
            return self.s.read(n)
        except _Short as exc:
            raise TruncatedDataset(f"truncated: {what} ends after {max(exc.args[0], 0)} "
                                   f"of {n} bytes") from None

    def skip(self, n: int, tag: int) -> None:
        try:
            self.s.skip(n)
        except _Short as exc:
            left = f", {exc.args[0]} remain" if exc.args[0] >= 0 else ""
            raise TruncatedDataset(f"truncated: {_tag(tag)} declares {n} bytes{left}") from None

    def dataset(self, enc: _Encoding, bound: int | None, delimited: bool, depth: int,
                collect: frozenset[int] = frozenset(), meta: bool = False) -> _Encoding:
        """Walk elements to ``bound`` (None: the end of the stream) or, if ``delimited``,
        to an Item Delimitation Item. Returns the encoding found (it may be guessed
        from the first element, as pydicom does)."""
        s, top = self.s, bound is None and not delimited and not meta
        first = True
        while True:
            if bound is not None and s.pos >= bound:
                if delimited:
                    raise MalformedDataset("item without its delimiter inside its sequence")
                return enc
            if bound is None and s.at_end():
                if delimited:
                    raise TruncatedDataset("truncated: an item has no delimiter")
                return enc
            head = s.peek(8)
            if meta and (len(head) < 2 or head[:2] != b"\x02\x00"):
                return enc
            if top and (len(head) < 8 or head[:4] == b"\0\0\0\0") and s.rest_is_zero():
                return enc  # NUL padding after the last element (a sector-padded file)
            if bound is not None and bound - s.pos < 8:
                raise MalformedDataset("an element header crosses the end of its item")
            if first and enc.little and depth == 0:
                # A data set encoded otherwise than its transfer syntax says: read as is.
                looks_explicit = len(head) == 8 and head[4:6].isalpha() and head[4:6].isupper()
                enc = _Encoding(looks_explicit, True)
            first = False
            self.element(enc, bound, delimited, depth, collect)

    def element(self, enc: _Encoding, bound: int | None, delimited: bool, depth: int,
                collect: frozenset[int]) -> None:
        group, elem, length = enc.tag_length.unpack(self.read(8, "an element header"))
        tag = group << 16 | elem
        vr = b""
        if group == 0xFFFE:
            if tag == ITEM_END and delimited:
                raise _ItemEnd
            raise MalformedDataset(f"unexpected {_tag(tag)} in a data set")
        if enc.explicit:
            vr = struct.pack("<I", length)[:2] if enc.little else struct.pack(">I", length)[:2]
            if not (vr.isalpha() and vr.isupper()):
                raise MalformedDataset(f"{_tag(tag)} has no valid VR")
            if vr in _LONG_VRS:
                (length,) = struct.unpack("<I" if enc.little else ">I",
                                          self.read(4, f"{_tag(tag)}'s header"))
            else:
                length = length >> 16 if enc.little else length & 0xFFFF
        if length == UNDEFINED:
            if vr == b"SQ" or (not enc.explicit and tag != PIXEL_DATA):
                self.sequence(enc, bound, False, depth, tag)
            elif vr == b"UN":  # PS3.5 6.2.2: an unknown sequence, implicit VR LE inside
                self.sequence(_IMPLICIT, bound, False, depth, tag)
            elif tag == PIXEL_DATA or vr in (b"OB", b"OW"):
                self.fragments(enc, bound, tag)
            else:
                raise MalformedDataset(f"{_tag(tag)} {vr.decode()} has undefined length")
            return
        if bound is not None and self.s.pos + length > bound:
            raise MalformedDataset(f"{_tag(tag)} of {length} bytes runs past its item's end")
        is_sequence = vr == b"SQ" or (
            not enc.explicit and length and DicomDictionary.get(tag, ("",))[0] == "SQ")
        if is_sequence:
            self.sequence(enc, self.s.pos + length, True, depth, tag)
        elif tag in collect:
            if length > _MAX_UID_BYTES:
                self.too_long[tag] = length
                self.skip(length, tag)
            else:
                self.found[tag] = self.read(length, _tag(tag))
        else:
            self.skip(length, tag)

    def sequence(self, enc: _Encoding, bound: int | None, defined: bool, depth: int,
                 tag: int) -> None:
        """Items to ``bound`` if the sequence has a length (``defined``), else to its
        delimiter, which must come before ``bound`` (its enclosing item's end)."""
        if depth >= MAX_DEPTH:
            raise MalformedDataset(f"sequences nested deeper than {MAX_DEPTH}")
        s = self.s
        while True:
            if defined and s.pos == bound:
                return
            if bound is not None and bound - s.pos < 8:
                raise MalformedDataset(f"sequence {_tag(tag)} ends inside an item header")
            group, elem, length = enc.tag_length.unpack(self.read(8, f"{_tag(tag)}'s item"))
            item = group << 16 | elem
            if item == SEQUENCE_END and not defined:
                return
            if item != ITEM:
                raise MalformedDataset(f"{_tag(item)} where an item of {_tag(tag)} belongs")
            if length != UNDEFINED:
                if bound is not None and s.pos + length > bound:
                    raise MalformedDataset(
                        f"an item of {_tag(tag)} runs past its sequence's end")
                self.dataset(enc, s.pos + length, False, depth + 1)
                continue
            try:  # a delimited item never ends otherwise: it raises what it found
                self.dataset(enc, bound, True, depth + 1)
            except _ItemEnd:
                pass

    def fragments(self, enc: _Encoding, bound: int | None, tag: int) -> None:
        """Encapsulated pixel data: items of defined length, then a delimiter."""
        while True:
            if bound is not None and bound - self.s.pos < 8:
                raise MalformedDataset(f"{_tag(tag)} fragments cross the end of their item")
            group, elem, length = enc.tag_length.unpack(
                self.read(8, f"a fragment of {_tag(tag)}"))
            item = group << 16 | elem
            if item == SEQUENCE_END:
                return
            if item != ITEM or length == UNDEFINED:
                raise MalformedDataset(f"{_tag(item)} where a fragment of {_tag(tag)} belongs")
            if bound is not None and self.s.pos + length > bound:
                raise MalformedDataset(f"a fragment of {_tag(tag)} runs past its item's end")
            self.skip(length, tag)


class _ItemEnd(Exception):
    """An Item Delimitation Item ended the item being walked."""


def _syntax(raw: bytes | None) -> str:
    if raw is None:
        raise MissingUID("no Transfer Syntax UID in the file meta")
    problem = uid_problem(raw)
    if problem:
        raise InvalidUID(f"TransferSyntaxUID {problem}")
    return raw.rstrip(b"\0 ").decode("ascii")


def validate(source: bytes | bytearray | memoryview | BinaryIO) -> None:
    """Raise an :class:`InvalidDataset` subclass unless ``source`` is a whole Part 10
    object with valid identifying UIDs. A file is read from its start and left anywhere."""
    fh: BinaryIO = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) \
        else source
    size = fh.seek(0, io.SEEK_END)
    fh.seek(0)
    if size < 132 or fh.read(132)[128:] != b"DICM":
        raise NotPart10("not a DICOM Part 10 object (no preamble and DICM prefix)")
    walker = _Walker(_Stream(fh, 132, size))
    try:
        walker.dataset(_Encoding(True, True), None, False, 0,
                       frozenset((MEDIA_SOP_INSTANCE, TRANSFER_SYNTAX)), meta=True)
    except _ItemEnd:
        raise MalformedDataset("unexpected item delimiter in the file meta") from None
    if TRANSFER_SYNTAX in walker.too_long:
        raise InvalidUID("TransferSyntaxUID is far longer than 64 characters")
    syntax = _syntax(walker.found.get(TRANSFER_SYNTAX))
    meta_end = walker.s.pos
    if syntax in DEFLATED:
        walker.s = _Inflating(fh, meta_end)
        enc = _Encoding(True, True)
    else:
        enc = _Encoding(syntax != IMPLICIT_LE, syntax != EXPLICIT_BE)
    try:
        walker.dataset(enc, None, False, 0, frozenset(IDENTIFYING))
    except _ItemEnd:
        raise MalformedDataset("item delimiter outside any item") from None
    for tag, name in IDENTIFYING.items():
        if tag in walker.too_long:
            raise InvalidUID(f"{name} is {walker.too_long[tag]} characters (UI allows 64)")
        raw = walker.found.get(tag)
        if raw is None:
            raise MissingUID(f"missing {name}")
        problem = uid_problem(raw)
        if problem:
            raise InvalidUID(f"{name} {problem}")
    media = walker.found.get(MEDIA_SOP_INSTANCE)
    if media is not None and media.rstrip(b"\0 ") and \
            media.rstrip(b"\0 ") != walker.found[0x00080018].rstrip(b"\0 "):
        raise InvalidUID("MediaStorageSOPInstanceUID differs from SOPInstanceUID")
