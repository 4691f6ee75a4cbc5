"""The direct encodings of C-STORE responses and file meta give exactly pynetdicom's bytes."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode
from pynetdicom.dsutils import encode_file_meta as encode_file_meta_pynetdicom

from node.dicom.encoding import encode_file_meta, encode_store_rsp

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
