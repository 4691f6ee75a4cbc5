"""Explicit to Implicit VR Little Endian without decoding: the bytes pydicom writes.

The reference is what the node sent before (pydicom decodes the stored file, pynetdicom
encodes it Implicit VR LE); the real images of pydicom-data, and nested sequences of
both defined and undefined length.
"""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import encode

from node.transcode import explicit_to_implicit
from tests.support import dataset_bytes, one_file_per_instance, transfer_syntax

EXPLICIT = [p for p in one_file_per_instance(dcmtk_only=False)
            if transfer_syntax(p) == "1.2.840.10008.1.2.1"]
# pydicom re-encodes the values it decodes; here, a space inside a multi-valued CS
# ("DERIVED \SECONDARY"): the converter keeps the stored bytes of every value.
VALUES_REWRITTEN_BY_PYDICOM = {"SC_rgb_gdcm2k_uncompressed.dcm"}


def pydicom_implicit(path: Path) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(encode(dcmread(path), True, True))


@pytest.mark.parametrize("sample", EXPLICIT, ids=lambda p: p.name)
def test_same_bytes_as_pydicom(sample: Path) -> None:
    converted = explicit_to_implicit(dataset_bytes(sample))
    assert converted is not None
    if sample.name in VALUES_REWRITTEN_BY_PYDICOM:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = dcmread(BytesIO(converted), force=True)
            ours.set_original_encoding(True, True)
            assert [e.tag for e in ours] == [e.tag for e in dcmread(sample)]
        return
    assert converted == pydicom_implicit(sample)


def _explicit(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _nested(undefined: bool) -> Dataset:
    inner = Dataset()
    inner.CodeValue = "T-D3000"
    inner.CodeMeaning = "Chest"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    item.AnatomicRegionSequence = Sequence([inner])
    ds = Dataset()
    ds.PatientID = "X1"
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds.LargestImagePixelValue = 4095
    ds.add_new(0x00091010, "LO", "private")
    ds.add_new(0x00091011, "UN", b"\x01\x02")
    for elem in (ds["ReferencedImageSequence"], item["AnatomicRegionSequence"]):
        elem.is_undefined_length = undefined
    for sub in (item, inner, ds.ReferencedImageSequence[1]):
        sub.is_undefined_length_sequence_item = undefined
    return ds


@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
def test_nested_sequences_keep_their_kind_of_length(undefined: bool) -> None:
    explicit = _explicit(_nested(undefined))
    assert explicit_to_implicit(explicit) == bytes(encode(_nested(undefined), True, True))


def test_what_it_does_not_follow_is_left_to_pydicom() -> None:
    ds = Dataset()
    ds.PatientID = "X1"
    explicit = _explicit(ds)
    assert explicit_to_implicit(explicit[:-1]) is None  # cut short
    assert explicit_to_implicit(explicit[:4] + b"ZZ" + explicit[6:]) is None  # no such VR
    # An undefined-length UN (a sequence in implicit VR inside explicit VR data).
    undefined_un = b"\x09\x00\x10\x00UN\0\0\xff\xff\xff\xff" + b"\xfe\xff\xdd\xe0\0\0\0\0"
    assert explicit_to_implicit(undefined_un) is None
