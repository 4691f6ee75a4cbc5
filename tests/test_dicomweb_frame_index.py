"""Frames found by offset (node/http/dicomweb/frame_index.py) are exactly pydicom's: every
real image of pydicom-data and pydicom's own test files, native and encapsulated, single
and multi-frame, in plaintext and sealed at rest; unusual layouts give None (the caller
parses the whole file then), never other bytes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from node.at_rest import ObjectKey
from node.http.dicomweb.frame_index import NATIVE, FrameMap, locate, read_frame
from node.http.dicomweb.frames import cut_frames
from node.storage import Storage, sha256_hex
from tests.support import one_file_per_instance

# Each kind the fast path must take, not leave to the whole-file parse.
MUST_LOCATE = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm",
               "US1_J2KR.dcm", "emri_small.dcm", "SC_rgb_rle_2frame.dcm",
               "emri_small_jpeg_2k_lossless.dcm")


def pydicom_frames(path: Path) -> list[bytes] | None:
    """What the whole-file path serves (frames.py before offsets), or None: no pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path)
    if "PixelData" not in ds:
        return None
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID in NATIVE:
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) \
            * (int(ds.BitsAllocated) // 8)
        return [bytes(ds.PixelData)[n * size:(n + 1) * size] for n in range(count)]
    return list(generate_frames(ds.PixelData, number_of_frames=count))


def located(path: Path) -> FrameMap | None:
    with warnings.catch_warnings(), path.open("rb") as fh:
        warnings.simplefilter("ignore")
        return locate(fh)


def candidates() -> list[Path]:
    named = [Path(str(get_testdata_file(n))) for n in MUST_LOCATE]
    return named + one_file_per_instance(dcmtk_only=False)


@pytest.mark.parametrize("path", candidates(), ids=lambda p: p.name)
def test_frames_by_offset_are_pydicoms(path: Path) -> None:
    try:
        want = pydicom_frames(path)
    except Exception:  # pydicom cannot parse it whole: nothing to compare against
        pytest.skip("pydicom cannot read the whole file")
    found = located(path)
    if path.name in MUST_LOCATE:
        assert found is not None
    if found is None or want is None:
        return
    assert found.count == len(want)
    with path.open("rb") as fh:
        assert [read_frame(fh, spans) for spans in found.frames] == want


def test_sealed_objects_give_the_plaintext_frames(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "objects", key=ObjectKey(bytes(range(32))), seal_new=True)
    storage.prepare()
    for name in MUST_LOCATE:
        data = Path(str(get_testdata_file(name))).read_bytes()
        sha = sha256_hex(data)
        storage.write(data, sha)
        assert storage.path(sha).read_bytes()[:8] != data[:8]  # really sealed
        with storage.open_object(sha) as fh:
            found = locate(fh)
            assert found is not None
            got = [read_frame(fh, spans) for spans in found.frames]
        assert got == pydicom_frames(Path(str(get_testdata_file(name))))


@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm"])
def test_a_cut_file_is_left_to_the_whole_file_parse(tmp_path: Path, name: str) -> None:
    source = Path(str(get_testdata_file(name))).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(source[:len(source) // 2])
    assert located(cut) is None  # the header promises more pixel data than the file holds
    whole = located(Path(str(get_testdata_file(name))))
    assert whole is not None
    with cut.open("rb") as fh, pytest.raises(OSError, match="end early"):
        read_frame(fh, whole.frames[-1])  # a map kept from before the cut: an error


@pytest.mark.parametrize("sealed", [False, True], ids=["plaintext", "sealed"])
def test_the_node_cuts_by_offset_from_its_storage(tmp_path: Path, sealed: bool) -> None:
    """frames.cut_frames, what the WADO-RS handler runs in its thread: the map found, then
    reused, and the frames asked for in the order asked (not a fall-back to the whole
    file, which cut_frames never does)."""
    storage = Storage(tmp_path / "objects", key=ObjectKey(bytes(32)) if sealed else None,
                      seal_new=sealed)
    storage.prepare()
    source = Path(str(get_testdata_file("emri_small.dcm")))
    data = source.read_bytes()
    storage.write(data, sha256_hex(data))
    want = pydicom_frames(source)
    assert want is not None and len(want) > 4
    found, got = cut_frames(storage, sha256_hex(data), None, [3, 1])
    assert found is not None and got == [want[2], want[0]]
    again, got = cut_frames(storage, sha256_hex(data), found, [len(want)])
    assert again is found and got == [want[-1]]
    assert cut_frames(storage, sha256_hex(data), found, [len(want) + 1]) == (found, [])
