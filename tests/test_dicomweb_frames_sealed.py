"""Frames read by offset from objects sealed at rest (issue 15, speed): over HTTP from a
node with --encrypt-at-rest they are pydicom's frames of the plaintext, native and
encapsulated, single and multi-frame; a sealed object with one bit flipped is a 503 and
is set aside, as a whole-file read would have it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom import dcmread
from pydicom.data import get_testdata_file

from node.at_rest import is_sealed
from node.at_rest_keys import load_key
from node.storage import Storage
from tests.mesh_support import wait_for
from tests.support import NodeProcess, storescu
from tests.test_dicomweb_frame_index import MUST_LOCATE, pydicom_frames
from tests.test_dicomweb_wado import raw_parts

# One file per SOP Instance UID (the two-frame variants share theirs with one-frame
# files): native and encapsulated, single and multi-frame.
SEALED = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "US1_J2KR.dcm",
          "SC_rgb_rle_2frame.dcm", "emri_small_jpeg_2k_lossless.dcm")
ANY_SYNTAX = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def sample(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(data_dir=tmp_path_factory.mktemp("sealed") / "node",
                       extra_args=("--encrypt-at-rest",)).start()
    try:
        assert set(SEALED) <= set(MUST_LOCATE)
        assert storescu(node, [sample(n) for n in SEALED]) == []
        yield node
    finally:
        node.stop()


def frames_path(name: str, numbers: str) -> str:
    ds = dcmread(sample(name), stop_before_pixels=True)
    return (f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}/frames/{numbers}")


@pytest.mark.parametrize("name", SEALED)
def test_frames_of_sealed_objects_are_pydicoms(sealed: NodeProcess, name: str) -> None:
    client = DICOMwebClient(url=f"http://127.0.0.1:{sealed.http_port}/dicom-web")
    want = pydicom_frames(sample(name))
    assert want
    numbers = ",".join(str(n) for n in range(len(want), 0, -1))  # last first
    for _ in range(2):  # the frames' map found, then kept
        assert raw_parts(client, frames_path(name, numbers), ANY_SYNTAX) == want[::-1]


def stored_object(node: NodeProcess, name: str) -> Path:
    """The sealed file of sample ``name`` (found by reading each with the node's key)."""
    storage = Storage(node.data_dir, load_key(node.data_dir, False, None))
    uid = dcmread(sample(name), stop_before_pixels=True).SOPInstanceUID
    for path in (node.data_dir / "objects").rglob("*.dcm"):
        with storage.open_file(path, path.stem) as fh:
            if dcmread(fh, stop_before_pixels=True).SOPInstanceUID == uid:
                return path
    raise AssertionError(f"{name} not stored")


def test_a_flipped_bit_is_a_503_and_the_object_set_aside(sealed: NodeProcess) -> None:
    victim = stored_object(sealed, "MR_small.dcm")
    assert is_sealed(victim.read_bytes())
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the pixel data's chunk
    victim.write_bytes(bytes(data))
    url = f"http://127.0.0.1:{sealed.http_port}/dicom-web{frames_path('MR_small.dcm', '1')}"
    rsp = requests.get(url, headers={"Accept": ANY_SYNTAX}, timeout=30)
    assert rsp.status_code == 503 and "set aside" in rsp.text
    wait_for(lambda: (sealed.data_dir / "quarantine" / victim.name).exists(), 10)
