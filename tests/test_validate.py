"""The ingest validator (node/dicom_validate.py), without sockets: bytes in, a verdict out."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import pytest

from node.dicom_header import InvalidDataset, read_keys
from node.dicom_validate import (
    InvalidUID,
    MalformedDataset,
    TruncatedDataset,
    uid_problem,
    validate,
)
from tests.support import TRULY_BROKEN, data_store_dir

EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
EXPLICIT_BE, DEFLATED = "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
SOP = "1.2.826.0.1.3680043.8.498.1"
LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


def el(tag: int, vr: str, value: bytes, little: bool = True, explicit: bool = True,
       length: int | None = None) -> bytes:
    e = "<" if little else ">"
    n = len(value) if length is None else length
    head = struct.pack(e + "HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack(e + "I", n) + value
    if vr in LONG:
        return head + vr.encode() + b"\0\0" + struct.pack(e + "I", n) + value
    return head + vr.encode() + struct.pack(e + "H", n) + value


def uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def item(content: bytes, defined: bool = True) -> bytes:
    if defined:
        return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content
    return (struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + content
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0))


SEQ_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def identifying(sop: str = SOP, **kw: str) -> dict[int, bytes]:
    return {0x00080016: uid(kw.get("cls", "1.2.840.10008.5.1.4.1.1.7")),
            0x00080018: uid(sop),
            0x0020000D: uid(kw.get("study", "1.2.3.4")),
            0x0020000E: uid(kw.get("series", "1.2.3.4.5"))}


def body(extra: bytes = b"", little: bool = True, explicit: bool = True, **kw: str) -> bytes:
    uids = b"".join(el(t, "UI", v, little, explicit) for t, v in identifying(**kw).items()
                    if t < 0x00100000)
    name = el(0x00100010, "PN", b"Doe^Jane", little, explicit)
    later = b"".join(el(t, "UI", v, little, explicit) for t, v in identifying(**kw).items()
                     if t > 0x00100000)
    return uids + name + later + extra


def part10(dataset: bytes, syntax: str = EXPLICIT_LE, media: str | None = SOP) -> bytes:
    meta = el(0x00020001, "OB", b"\0\1")
    if media is not None:
        meta += el(0x00020003, "UI", uid(media))
    meta += el(0x00020010, "UI", uid(syntax))
    meta = el(0x00020000, "UL", struct.pack("<I", len(meta))) + meta
    return b"\0" * 128 + b"DICM" + meta + dataset


PIXELS = el(0x7FE00010, "OW", b"\1\2" * 8)
FRAGMENTS = (el(0x7FE00010, "OB", b"", length=UNDEFINED) + item(b"") + item(b"\xff\xd8" * 4)
             + SEQ_END)
NESTED = el(0x00400275, "SQ", item(el(0x00400009, "SH", b"ABC ")) + item(
    el(0x0040A730, "SQ", item(el(0x0040A040, "CS", b"TEXT"), defined=False) + SEQ_END,
       length=UNDEFINED)), length=None)
UNDEF_SEQ = el(0x00081115, "SQ", item(el(0x00081150, "UI", uid("1.2.3"))) + item(
    el(0x00081155, "UI", uid("1.2.3.4")), defined=False) + SEQ_END, length=UNDEFINED)


def refused(data: bytes, kind: type[InvalidDataset]) -> str:
    with pytest.raises(kind) as caught:
        validate(data)
    return str(caught.value)


# --- what is accepted ---------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    PIXELS, FRAGMENTS, NESTED + PIXELS, UNDEF_SEQ + FRAGMENTS,
    PIXELS + el(0xFFFCFFFC, "OB", b"\0" * 64),  # Data Set Trailing Padding
    PIXELS + b"\0" * 37,  # NUL bytes after the last element (a sector-padded file)
    el(0x00181030, "LO", b"odd"),  # an odd-length value, as some modalities write
    el(0x00091010, "UN", item(el(0x00091011, "LO", b"AB", explicit=False), defined=False)
       + SEQ_END, length=UNDEFINED),  # an unknown sequence, implicit VR inside
], ids=["pixels", "fragments", "nested", "undefined-seq", "trailing-padding-element",
        "nul-padding", "odd-length", "un-sequence"])
def test_well_formed_objects_are_accepted(extra: bytes) -> None:
    validate(part10(body(extra)))


def test_uids_padded_with_nul_or_space_are_accepted() -> None:
    validate(part10(body(PIXELS, sop="1.2.3.44", study="1.2.3 "), media="1.2.3.44"))
    assert uid_problem(b"1.2.3\0") is None and uid_problem(b"1.2.3 ") is None


def test_other_encodings_are_walked() -> None:
    implicit = body(el(0x00081115, "SQ", item(el(0x00081150, "UI", uid("1.2"), explicit=False)),
                       explicit=False) + el(0x7FE00010, "OW", b"\0" * 8, explicit=False),
                    explicit=False)
    validate(part10(implicit, IMPLICIT_LE))
    big = body(el(0x7FE00010, "OW", b"\0" * 8, little=False), little=False)
    validate(part10(big, EXPLICIT_BE))
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = squeeze.compress(body(NESTED + PIXELS)) + squeeze.flush()
    validate(part10(deflated, DEFLATED))
    # Truncations are found in each of them too.
    with pytest.raises(TruncatedDataset):
        validate(part10(implicit[:-3], IMPLICIT_LE))
    with pytest.raises(TruncatedDataset):
        validate(part10(big[:-3], EXPLICIT_BE))
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with pytest.raises(TruncatedDataset):
        validate(part10(squeeze.compress(body(NESTED + PIXELS)[:-5]) + squeeze.flush(),
                        DEFLATED))
    with pytest.raises(TruncatedDataset):
        validate(part10(deflated[:-4], DEFLATED))


def test_a_file_is_walked_in_place(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(part10(body(el(0x7FE00010, "OW", b"\0" * 300_000))))
    with path.open("rb") as fh:
        validate(fh)
    path.write_bytes(part10(body(el(0x7FE00010, "OW", b"\0" * 16, length=0xFFFFFFF0))))
    with path.open("rb") as fh, pytest.raises(TruncatedDataset):
        validate(fh)


# --- truncations and bad structure ----------------------------------------------------------


def test_pixel_data_declaring_more_than_it_carries() -> None:
    why = refused(part10(body(el(0x7FE00010, "OB", b"\0" * 16, length=0xFFFFFFF0))),
                  TruncatedDataset)
    assert "(7FE0,0010) declares 4294967280 bytes, 16 remain" in why


@pytest.mark.parametrize("extra", [PIXELS, FRAGMENTS, NESTED, UNDEF_SEQ])
def test_every_cut_inside_the_last_elements_is_refused(extra: bytes) -> None:
    whole = part10(body(extra))
    start = len(whole) - len(extra)
    for cut in range(start + 1, len(whole)):
        with pytest.raises(InvalidDataset):
            validate(whole[:cut])


@pytest.mark.parametrize(("extra", "kind", "words"), [
    (el(0x00081115, "SQ", item(b""), length=UNDEFINED), TruncatedDataset, "truncated"),
    (el(0x00081115, "SQ", struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
        + el(0x00081150, "UI", uid("1.2")), length=UNDEFINED), TruncatedDataset, "delimiter"),
    (el(0x00081115, "SQ", el(0x00081150, "UI", uid("1.2"))), MalformedDataset, "item of"),
    (el(0x00081115, "SQ", item(b"\0" * 12)[:8] + b"\0" * 4), MalformedDataset, ""),
    (el(0x00081115, "SQ", struct.pack("<HHI", 0xFFFE, 0xE000, 40) + b"\0" * 8),
     MalformedDataset, "past its sequence's end"),
    (el(0x00081115, "SQ", item(el(0x00081150, "UI", uid("1.2.3.4"))[:-2]))
     + el(0x00100020, "LO", b"ID"), MalformedDataset, ""),
    (el(0x7FE00010, "OB", b"", length=UNDEFINED) + item(b"\0" * 4), TruncatedDataset,
     "fragment"),
    (el(0x7FE00010, "OB", b"", length=UNDEFINED) + struct.pack("<HHI", 0xFFFE, 0xE000,
                                                               UNDEFINED) + SEQ_END,
     MalformedDataset, "fragment"),
    (el(0x00204000, "UT", b"", length=UNDEFINED), MalformedDataset, "undefined length"),
    (PIXELS + b"\1\2\3", TruncatedDataset, "element header"),
    (PIXELS + b"junk after the end", MalformedDataset, ""),
    (SEQ_END, MalformedDataset, "unexpected"),
    (b"\x08\x00\x20\x00\x01\x02\x04\x00ABCD", MalformedDataset, "VR"),
], ids=["seq-no-delimiter", "item-no-delimiter", "not-an-item", "item-short-header",
        "item-past-seq", "element-past-item", "fragments-no-delimiter",
        "fragment-undefined", "undefined-text", "short-header", "junk", "stray-delimiter",
        "bad-vr"])
def test_bad_structure_is_refused(extra: bytes, kind: type[InvalidDataset], words: str) -> None:
    with pytest.raises(InvalidDataset) as caught:
        validate(part10(body(extra)))
    assert isinstance(caught.value, kind), caught.value
    assert words in str(caught.value)


def test_nesting_bomb_is_refused() -> None:
    content = el(0x00100020, "LO", b"ID")
    for _ in range(40):
        content = el(0x00081115, "SQ", item(content, defined=False) + SEQ_END,
                     length=UNDEFINED)
    assert "nested" in refused(part10(body(content)), MalformedDataset)


def test_not_part10_is_refused() -> None:
    refused(b"\0" * 200, MalformedDataset)
    refused(b"DICM", MalformedDataset)


# --- identifying UIDs ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "words"), [
    ("1." + "2" * 198, "is 200 characters (UI allows 64)"),
    ("1.2" + ".3" * 31, "is 65 characters"),
    ("1..2", "empty components"), ("1.02.3", "leading zeros"), (".1.2", "empty"),
    ("1.2.", "empty"), ("1.2.a3", "digits and dots"), ("1.2\\1.3", "digits and dots"),
])
def test_bad_sop_instance_uid_is_refused(value: str, words: str) -> None:
    why = refused(part10(body(PIXELS, sop=value), media=None), InvalidUID)
    assert why.startswith("SOPInstanceUID ") and words in why


def test_a_far_too_long_uid_is_not_read() -> None:
    why = refused(part10(body(PIXELS, sop="1" * 5000), media=None), InvalidUID)
    assert "5000 characters" in why


@pytest.mark.parametrize("kw", ["cls", "study", "series"])
def test_each_identifying_uid_is_checked(kw: str) -> None:
    why = refused(part10(body(PIXELS, **{kw: "1.2.03"})), InvalidUID)
    assert "UID is not digits and dots" in why


def test_missing_uid_and_bad_meta_are_refused() -> None:
    whole = body(PIXELS)
    without_series = whole.replace(el(0x0020000E, "UI", uid("1.2.3.4.5")), b"")
    assert "missing SeriesInstanceUID" in refused(part10(without_series), InvalidUID)
    assert "differs" in refused(part10(whole, media="1.2.3.9"), InvalidUID)
    assert "TransferSyntaxUID" in refused(part10(whole, syntax="1.2.840.10008.1.02"),
                                          InvalidUID)
    validate(part10(whole, media=None))  # the meta need not name the instance


def test_uid_rules() -> None:
    assert uid_problem(b"0") is None and uid_problem(b"1.0.2") is None
    assert uid_problem(b"1" * 64) is None and uid_problem(b"1" * 65)
    assert uid_problem(b"") and uid_problem(b"\0") and uid_problem(b"1.2\xff")


# --- real-world files ---------------------------------------------------------------------


def test_every_pydicom_data_file_accepted_before_is_accepted() -> None:
    """Every file that ingest took before validation (its header parses, its keys are
    there) passes, except the ones shown broken in tests/support.py TRULY_BROKEN."""
    accepted_before, refused_now = 0, {}
    for path in sorted(data_store_dir().iterdir()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read_keys(path)
            except InvalidDataset:
                continue
        accepted_before += 1
        with path.open("rb") as fh:
            try:
                validate(fh)
            except InvalidDataset as exc:
                refused_now[path.name] = str(exc)
        validate(path.read_bytes()) if path.name not in refused_now else None
    assert accepted_before > 60
    assert set(refused_now) == set(TRULY_BROKEN), refused_now
    for name, why in TRULY_BROKEN.items():
        assert why in refused_now[name]


def test_sequences_in_implicit_and_big_endian_encodings() -> None:
    undefined = (el(0x00081115, "SQ", b"", explicit=False, length=UNDEFINED)
                 + item(el(0x00081150, "UI", uid("1.2"), explicit=False), defined=False)
                 + SEQ_END)
    validate(part10(body(undefined, explicit=False), IMPLICIT_LE))
    with pytest.raises(TruncatedDataset):
        validate(part10(body(undefined[:-8], explicit=False), IMPLICIT_LE))
    be_item = (struct.pack(">HHI", 0xFFFE, 0xE000, 14)
               + el(0x00081150, "UI", uid("1.2.3"), little=False))
    be_seq = el(0x00081115, "SQ", be_item, little=False)
    validate(part10(body(be_seq, little=False), EXPLICIT_BE))
    # Read as little endian, the same item is garbage.
    with pytest.raises(MalformedDataset):
        validate(part10(body(be_seq), EXPLICIT_LE))


def test_bytes_after_a_deflated_data_set_are_refused() -> None:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = squeeze.compress(body(PIXELS)) + squeeze.flush()
    validate(part10(deflated + b"\0\0", DEFLATED))
    assert "follow" in refused(part10(deflated + b"junk", DEFLATED), MalformedDataset)
    assert "inflate" in refused(part10(b"\xff" * 40, DEFLATED), MalformedDataset)
