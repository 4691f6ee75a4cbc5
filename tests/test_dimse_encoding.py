"""The direct encodings of the C-STORE and retrieve paths give exactly pynetdicom's bytes."""

from __future__ import annotations

from io import BytesIO
from itertools import pairwise

import pytest
from pynetdicom.dimse_messages import C_ECHO_RSP, C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import create_file_meta, encode
from pynetdicom.dsutils import encode_file_meta as encode_file_meta_pynetdicom
from pynetdicom.pdu import P_DATA_TF

from node.dicom.direct import fragments
from node.dicom.encoding import (
    StoreResponse,
    decode_store_rsp,
    encode_file_meta,
    encode_retrieve_rsp,
    encode_store_rq,
    encode_store_rsp,
    pdv_headers,
)

CT = "1.2.840.10008.5.1.4.1.1.2"


def pynetdicom_bytes(primitive: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize(
    ("sop_uid", "message_id", "status", "comment"),
    [
        ("1.2.3.4", 1, 0x0000, None),  # even-length UID
        ("1.2.3.45", 65535, 0x0000, None),  # odd-length UID: padded with NUL
        ("1.2.826.0.1.3680043.8.498.1", 7, 0xB006, "Duplicate, first kept"),
        ("1.2.3", 2, 0xA700, "Archive storage is full"),  # even-length comment
        ("1.2.3", 3, 0xC000, "missing SOPInstanceUID"),  # odd-length comment
    ],
)
def test_same_bytes_as_pynetdicom(
    sop_uid: str, message_id: int, status: int, comment: str | None
) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = sop_uid
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment
    assert encode_store_rsp(CT, sop_uid, message_id, status, comment) == pynetdicom_bytes(rsp)


@pytest.mark.parametrize(
    ("sop_uid", "syntax"),
    [
        ("1.2.3.4", "1.2.840.10008.1.2.1"),  # odd-length syntax UID
        ("1.2.3.45", "1.2.840.10008.1.2.4.50"),
        ("1.2.826.0.1.3680043.8.498.12345678901234567890", "1.2.840.10008.1.2"),
    ],
)
def test_file_meta_same_bytes_as_pynetdicom(sop_uid: str, syntax: str) -> None:
    meta = create_file_meta(sop_class_uid=CT, sop_instance_uid=sop_uid, transfer_syntax=syntax)
    expected = b"\0" * 128 + b"DICM" + encode_file_meta_pynetdicom(meta)
    assert encode_file_meta(CT, sop_uid, syntax) == expected


# --- the retrieve path: C-STORE requests, C-GET/C-MOVE responses, PDU framing ----------

GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"


def pynetdicom_command(message_class: type, primitive: object) -> bytes:
    message = message_class()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize(
    ("sop_uid", "message_id", "originator"),
    [
        ("1.2.3.4", 1, None),  # a C-GET's sub-operation
        ("1.2.3.45", 65535, ("MOVESCU", 3)),  # odd UID, odd AE title: padded
        ("1.2.826.0.1.3680043.8.498.1", 7, ("ARCHIVE1", 65535)),
    ],
)
def test_store_rq_same_bytes_as_pynetdicom(
    sop_uid: str, message_id: int, originator: tuple[str, int] | None
) -> None:
    rq = C_STORE()
    rq.MessageID = message_id
    rq.AffectedSOPClassUID = CT
    rq.AffectedSOPInstanceUID = sop_uid
    rq.Priority = 2
    if originator:
        rq.MoveOriginatorApplicationEntityTitle, rq.MoveOriginatorMessageID = originator
    rq.DataSet = BytesIO(b"\0\0")
    aet, mid = originator or (None, None)
    assert encode_store_rq(CT, sop_uid, message_id, 2, aet, mid) == pynetdicom_command(
        C_STORE_RQ, rq)


@pytest.mark.parametrize("primitive_class", [C_GET, C_MOVE])
@pytest.mark.parametrize(
    ("status", "counts"),
    [
        (0xFF00, (199, 1, 0, 0)),  # pending
        (0xFF00, (0, 65535, 0, 0)),
        (0x0000, (None, 200, 0, 0)),  # final: no remaining count
        (0xB000, (None, 150, 40, 10)),
        (0xA702, (None, 0, 3, 0)),
    ],
)
def test_retrieve_rsp_same_bytes_as_pynetdicom(
    primitive_class: type, status: int, counts: tuple[int | None, ...]
) -> None:
    rsp = primitive_class()
    rsp.MessageIDBeingRespondedTo = 5
    rsp.AffectedSOPClassUID = GET_MODEL
    rsp.Status = status
    (rsp.NumberOfRemainingSuboperations, rsp.NumberOfCompletedSuboperations,
     rsp.NumberOfFailedSuboperations, rsp.NumberOfWarningSuboperations) = counts
    message_class, field = (C_GET_RSP, 0x8010) if primitive_class is C_GET else (
        C_MOVE_RSP, 0x8021)
    remaining, completed, failed, warning = counts
    assert encode_retrieve_rsp(field, GET_MODEL, 5, status,
                               (remaining, completed, failed, warning)) == \
        pynetdicom_command(message_class, rsp)


@pytest.mark.parametrize(
    ("sop_uid", "status", "comment"),
    [("1.2.3.4", 0x0000, None), ("1.2.3.45", 0xA700, "Out of resources"),
     ("1.2.3", 0xB007, None)],
)
def test_store_rsp_read_back(sop_uid: str, status: int, comment: str | None) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 9
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = sop_uid
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment
    assert decode_store_rsp(pynetdicom_bytes(rsp)) == StoreResponse(9, status, sop_uid)


def test_anything_but_a_store_rsp_is_left_to_pynetdicom() -> None:
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo = 1
    echo.Status = 0
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    assert decode_store_rsp(pynetdicom_command(C_ECHO_RSP, echo)) is None
    assert decode_store_rsp(b"\0\0\0\0\4\0\0\0") is None  # cut short
    assert decode_store_rsp(b"\x08\0\x18\0\2\0\0\0AB") is None  # not group 0000


@pytest.mark.parametrize(("length", "max_pdu"), [(40000, 16384), (16378, 16384),
                                                  (16379, 16384), (1, 16384), (512, 0),
                                                  (100_000, 65536)])
@pytest.mark.parametrize("command", [False, True])
def test_pdus_framed_as_pynetdicom_frames_them(length: int, max_pdu: int,
                                               command: bool) -> None:
    data = bytes(range(256)) * (length // 256) + bytes(length % 256)
    rq = C_STORE()
    rq.MessageID = 1
    rq.AffectedSOPClassUID = CT
    rq.AffectedSOPInstanceUID = "1.2.3"
    rq.Priority = 2
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    if command:
        data = bytes(encode(message.command_set, True, True))
    else:
        message.data_set = BytesIO(data)
    expected = []
    for primitive in message.encode_msg(3, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        expected.append(pdu.encode())
    ours = [header + data[start:end]
            for header, start, end in pdv_headers(3, len(data), max_pdu, command)]
    assert ours == (expected if command else expected[1:])  # [0]: the command


@pytest.mark.parametrize("cuts", [[], [10], [16378], [16377, 16379, 40000], [1, 2, 3, 99_999]])
@pytest.mark.parametrize("max_pdu", [16384, 0])
def test_a_data_set_in_pieces_goes_out_as_the_whole_would(cuts: list[int], max_pdu: int) -> None:
    data = bytes(range(256)) * 400  # 102400 bytes
    bounds = [0, *cuts, len(data)]
    pieces: list[bytes | memoryview] = [memoryview(data)[a:b] for a, b in pairwise(bounds)]
    whole = b"".join(header + data[start:end]
                     for header, start, end in pdv_headers(1, len(data), max_pdu, False))
    assert b"".join(bytes(b) for part in fragments(1, pieces, max_pdu) for b in part) == whole
