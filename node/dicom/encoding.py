"""The two encodings on the C-STORE hot path, written directly from plain values.

pynetdicom builds both through pydicom datasets, several tenths of a millisecond each,
paid once per stored instance:

- the C-STORE response command set (PS3.7 9.3.1.2; Implicit VR Little Endian, group
  0000, elements in tag order, group length first);
- the Part 10 preamble and file meta group of a received instance (PS3.10 7.1;
  Explicit VR Little Endian), as ``Event.encoded_dataset(include_meta=True)`` makes it.

Pure code; ``tests/test_dimse_encoding.py`` checks both against pynetdicom's bytes.
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
PREAMBLE = b"\0" * 128 + b"DICM"


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _implicit(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _explicit(element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value


def encode_store_rsp(
    sop_class_uid: str, sop_instance_uid: str, message_id: int, status: int,
    error_comment: str | None = None,
) -> bytes:
    """The encoded command set of a C-STORE-RSP."""
    body = b"".join([
        _implicit(0x0002, _ui(sop_class_uid)),
        _implicit(0x0100, _us(C_STORE_RSP)),
        _implicit(0x0120, _us(message_id)),
        _implicit(0x0800, _us(NO_DATA_SET)),
        _implicit(0x0900, _us(status)),
        _implicit(0x0902, _text(error_comment)) if error_comment else b"",
        _implicit(0x1000, _ui(sop_instance_uid)),
    ])
    return _implicit(0x0000, struct.pack("<I", len(body))) + body


def encode_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and the file meta group, as pynetdicom writes them."""
    body = b"".join((
        # (0002,0001) OB has a 4-byte length after two reserved bytes.
        struct.pack("<HH", 0x0002, 0x0001) + b"OB\0\0" + struct.pack("<I", 2) + b"\0\1",
        _explicit(0x0002, b"UI", _ui(sop_class_uid)),
        _explicit(0x0003, b"UI", _ui(sop_instance_uid)),
        _explicit(0x0010, b"UI", _ui(transfer_syntax)),
        _explicit(0x0012, b"UI", _ui(PYNETDICOM_IMPLEMENTATION_UID)),
        _explicit(0x0013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION)),
    ))
    return PREAMBLE + _explicit(0x0000, b"UL", struct.pack("<I", len(body))) + body
