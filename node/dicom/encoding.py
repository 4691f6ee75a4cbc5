"""The encodings on the C-STORE and retrieve hot paths, written directly from plain values.

pynetdicom builds each through pydicom datasets, several tenths of a millisecond each,
paid once per stored or retrieved instance:

- the C-STORE request and response command sets (PS3.7 9.3.1; Implicit VR Little
  Endian, group 0000, elements in tag order, group length first), and the C-GET and
  C-MOVE responses without identifier (PS3.7 9.3.3.2, 9.3.4.2): the pending one follows
  every retrieved instance;
- the C-STORE response a C-GET or C-MOVE waits for, read back (:func:`decode_store_rsp`);
- the Part 10 preamble and file meta group of a received instance (PS3.10 7.1;
  Explicit VR Little Endian), as ``Event.encoded_dataset(include_meta=True)`` makes it;
- P-DATA-TF PDU headers (PS3.8 9.3.5) for a message split as pynetdicom splits it.

Pure code; ``tests/test_dimse_encoding.py`` checks each against pynetdicom's bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RSP = 0x8010
C_MOVE_RSP = 0x8021
NO_DATA_SET = 0x0101
DATA_SET = 0x0001  # any other value than NO_DATA_SET; pynetdicom's
P_DATA_TF = 0x04
# The message control header of a PDV (PS3.8 E.2): command or data set, last or not.
DATA_FRAGMENT, COMMAND_FRAGMENT, LAST_DATA, LAST_COMMAND = 0x00, 0x01, 0x02, 0x03
PREAMBLE = b"\0" * 128 + b"DICM"


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def _ae(value: str) -> bytes:
    raw = value.strip().encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _implicit(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _command(elements: list[bytes]) -> bytes:
    """A command set: its group length, then the elements (already in tag order)."""
    body = b"".join(elements)
    return _implicit(0x0000, struct.pack("<I", len(body))) + body


def _explicit(element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value


def encode_store_rsp(
    sop_class_uid: str, sop_instance_uid: str, message_id: int, status: int,
    error_comment: str | None = None,
) -> bytes:
    """The encoded command set of a C-STORE-RSP."""
    return _command([
        _implicit(0x0002, _ui(sop_class_uid)),
        _implicit(0x0100, _us(C_STORE_RSP)),
        _implicit(0x0120, _us(message_id)),
        _implicit(0x0800, _us(NO_DATA_SET)),
        _implicit(0x0900, _us(status)),
        _implicit(0x0902, _text(error_comment)) if error_comment else b"",
        _implicit(0x1000, _ui(sop_instance_uid)),
    ])


def encode_store_rq(
    sop_class_uid: str, sop_instance_uid: str, message_id: int, priority: int = 2,
    originator_aet: str | None = None, originator_id: int | None = None,
) -> bytes:
    """The encoded command set of a C-STORE-RQ with a data set (a C-MOVE's sub-operations
    name the AE and message that asked for them)."""
    return _command([
        _implicit(0x0002, _ui(sop_class_uid)),
        _implicit(0x0100, _us(C_STORE_RQ)),
        _implicit(0x0110, _us(message_id)),
        _implicit(0x0700, _us(priority)),
        _implicit(0x0800, _us(DATA_SET)),
        _implicit(0x1000, _ui(sop_instance_uid)),
        _implicit(0x1030, _ae(originator_aet)) if originator_aet else b"",
        _implicit(0x1031, _us(originator_id)) if originator_id is not None else b"",
    ])


def encode_retrieve_rsp(
    command_field: int, sop_class_uid: str, message_id: int, status: int,
    counts: tuple[int | None, int | None, int | None, int | None],
) -> bytes:
    """The encoded command set of a C-GET-RSP or C-MOVE-RSP without identifier;
    ``counts`` are the remaining, completed, failed and warning sub-operations (None:
    left out)."""
    return _command([
        _implicit(0x0002, _ui(sop_class_uid)),
        _implicit(0x0100, _us(command_field)),
        _implicit(0x0120, _us(message_id)),
        _implicit(0x0800, _us(NO_DATA_SET)),
        _implicit(0x0900, _us(status)),
        *(_implicit(element, _us(count))
          for element, count in zip((0x1020, 0x1021, 0x1022, 0x1023), counts, strict=True)
          if count is not None),
    ])


@dataclass(frozen=True)
class StoreResponse:
    message_id: int
    status: int
    sop_instance_uid: str


def decode_store_rsp(command: bytes | memoryview) -> StoreResponse | None:
    """A C-STORE-RSP command set read back, or None if it is anything else (or anything
    this reader does not follow, which pynetdicom then decodes)."""
    values: dict[int, bytes] = {}
    view, offset = memoryview(command), 0
    try:
        while offset < len(view):
            group, element, length = struct.unpack_from("<HHI", view, offset)
            offset += 8
            if group != 0 or offset + length > len(view):
                return None
            values[element] = bytes(view[offset:offset + length])
            offset += length
        if struct.unpack("<H", values[0x0100])[0] != C_STORE_RSP:
            return None
        message_id = struct.unpack("<H", values[0x0120])[0]
        status = struct.unpack("<H", values[0x0900])[0]
        uid = values.get(0x1000, b"").rstrip(b"\0 ").decode("ascii")
    except (KeyError, struct.error, UnicodeDecodeError):
        return None
    return StoreResponse(message_id, status, uid)


def pdv_headers(context_id: int, length: int, max_pdu: int, command: bool) -> list[
        tuple[bytes, int, int]]:
    """(P-DATA-TF PDU and PDV header, start, end) for each fragment of a command set or
    data set of ``length`` bytes, one PDV per PDU, as pynetdicom splits them; ``max_pdu``
    is the peer's maximum PDU length (0: no limit)."""
    step = max_pdu - 6 if max_pdu else max(length, 1)
    more, last = (COMMAND_FRAGMENT, LAST_COMMAND) if command else (DATA_FRAGMENT, LAST_DATA)
    out = []
    for start in range(0, max(length, 1), step):
        end = min(start + step, length)
        control = last if end >= length else more
        size = end - start
        out.append((struct.pack(">BBIIBB", P_DATA_TF, 0, size + 6, size + 2, context_id,
                                control), start, end))
    return out


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
