"""Truncated or ill-formed instances are refused on every way in (issue 21, defect 2):
over DIMSE, HTTP upload, import, and between members; nothing stored before changes."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from node.storage import Storage
from tests.mesh_support import invite, joiner, mesh_view, peer_states, start_founder, wait_for
from tests.support import (
    NodeProcess,
    dataset_bytes,
    getscu_instance,
    one_file_per_instance,
    sop_instance_uid,
    storescu,
    transfer_syntax,
)
from tests.test_audit import audit_rows, wait_for_rows
from tests.test_http_tokens import add_token

LONG_UID = "1." + "2" * 198  # 200 characters; UI allows 64


def _ct_without_pixels(sop: str, media: str) -> bytes:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = media
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    out = io.BytesIO()
    dcmwrite(out, ds)  # the file meta as given, not made to agree with the data set
    return out.getvalue()


def truncated_ct() -> bytes:
    """Pixel Data that declares 0xFFFFFFF0 bytes and carries 16."""
    sop = generate_uid()
    return _ct_without_pixels(sop, sop) + (
        struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0" + struct.pack("<I", 0xFFFFFFF0)
        + b"\0" * 16)


def long_uid_ct() -> bytes:
    """A whole CT whose SOP Instance UID is 200 characters; the file meta (what a
    C-STORE request names) carries a valid one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own word on the UID
        return _ct_without_pixels(LONG_UID, generate_uid()) + (
            struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0" + struct.pack("<I", 16)
            + b"\0" * 16)


BAD = {"truncated": (truncated_ct, 0xC000, "(7FE0,0010) declares 4294967280 bytes"),
       "long-uid": (long_uid_ct, 0xA900, "SOPInstanceUID is 200 characters")}


def held(node: NodeProcess) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in (node.data_dir / "objects").rglob("*.dcm")}


def c_store_raw(node: NodeProcess, path: Path) -> tuple[int, str]:
    """Send a file's data set bytes as they are (pynetdicom's chunked path)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    return int(status.Status), str(status.get("ErrorComment", ""))


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name, (make, _, _) in BAD.items():
        files[name] = tmp_path / f"{name}.dcm"
        files[name].write_bytes(make())
    return files


def _plain_samples() -> list[Path]:
    return [p for p in one_file_per_instance()
            if transfer_syntax(p) == ExplicitVRLittleEndian][:2]


def _stored_before(node: NodeProcess, tmp_path: Path) -> dict[str, bytes]:
    assert storescu(node, _plain_samples()) == []
    return held(node)


def _unchanged(node: NodeProcess, before: dict[str, bytes], tmp_path: Path) -> None:
    """What was stored before is all there, byte-identical, and retrievable."""
    assert held(node) == before
    stored = {dataset_bytes(p) for p in (node.data_dir / "objects").rglob("*.dcm")}
    for path in _plain_samples():
        sop = sop_instance_uid(path)
        got = getscu_instance(node, tmp_path / "got" / sop[-8:], sop)
        assert dataset_bytes(got) in stored


def test_dimse_refuses_with_a_status_and_the_reason(
    make_node, bad_files: dict[str, Path], tmp_path: Path
) -> None:
    node = make_node(aet="ARCHIVE").start()
    before = _stored_before(node, tmp_path)
    for name, (_, code, words) in BAD.items():
        status, comment = c_store_raw(node, bad_files[name])
        assert status == code, (name, hex(status), comment)
        assert words[:40] in comment
    rows = wait_for_rows(node, lambda rows: sum(r["action"] == "refusal" for r in rows) >= 2)
    reasons = [r["detail"] for r in rows if r["action"] == "refusal"]
    assert any("declares 4294967280 bytes" in r for r in reasons), reasons
    assert any("SOPInstanceUID is 200 characters" in r for r in reasons), reasons
    assert all(r["calling_aet"] == "MODALITY" for r in rows if r["action"] == "refusal")
    assert LONG_UID not in node.log() and "Doe" not in node.log()
    _unchanged(node, before, tmp_path)


def test_http_upload_is_400_with_the_reason(
    make_node, bad_files: dict[str, Path], tmp_path: Path
) -> None:
    node = make_node(aet="ARCHIVE").start()
    before = _stored_before(node, tmp_path)
    token = add_token(node, "uploader")
    for name, (_, _, words) in BAD.items():
        request = urllib.request.Request(
            f"http://127.0.0.1:{node.http_port}/api/instances",
            data=bad_files[name].read_bytes(), method="POST",
            headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code == 400
        assert words in answer.value.read().decode()
    rows = wait_for_rows(node, lambda rows: sum(r["action"] == "refusal" for r in rows) >= 2)
    assert sum(r["action"] == "refusal" and r["calling_aet"] == "http" for r in rows) == 2
    _unchanged(node, before, tmp_path)


def test_import_counts_and_names_the_refused(bad_files: dict[str, Path], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    good = one_file_per_instance()[0]
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "import", "--data-dir", str(data_dir), str(good),
         get_testdata_file("DICOMDIR"), *map(str, bad_files.values())],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    # A DICOMDIR is no instance: skipped, as before, not refused.
    assert result.stdout.strip() == ("stored 1, duplicate 0, conflicting 0, skipped 1 "
                                     "non-DICOM, failed 0, refused 2 invalid")
    for name, (_, _, words) in BAD.items():
        assert f"refused: {bad_files[name]}: " in result.stderr and words in result.stderr
    objects = {p.read_bytes() for p in (data_dir / "objects").rglob("*.dcm")}
    assert objects == {good.read_bytes()}


def _outbox(node: NodeProcess) -> list[tuple[str, int, float, str]]:
    with sqlite3.connect(f"file:{node.data_dir / 'index.sqlite'}?mode=ro", uri=True) as db:
        return db.execute("SELECT sop_uid, attempts, next_try, last_error FROM outbox").fetchall()


def _fsck_indexes_one(data_dir: Path) -> None:
    """``pacsmesh fsck`` on a stopped node indexes the one object copied in by hand: a
    file no ingest wrote leaves no record in the crash journal start-up reads, so the
    full check finds it; nothing stored is dropped."""
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "fsck", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "checked: 1 reindexed, 0 quarantined" in result.stdout, result.stdout


def test_refused_instances_never_reach_a_member(
    make_node, bad_files: dict[str, Path], tmp_path: Path
) -> None:
    founder = start_founder(make_node)
    b = joiner(make_node, founder, "nodeb", invite(founder)).start()
    wait_for(lambda: len(mesh_view(founder)["members"]) == 2, 30)
    wait_for(lambda: list(peer_states(founder).values()) == ["alive"], 30)
    wait_for(lambda: held(b).keys() == held(founder).keys(), 60)
    # Over DIMSE, both are refused at the node that receives them.
    for name, (_, code, _) in BAD.items():
        assert c_store_raw(founder, bad_files[name])[0] == code
    # An object stored before ingest checked (as old releases did) is sent, refused by
    # the member with 415, and parked: not retried, not marked delivered.
    founder.stop()
    legacy = bad_files["truncated"].read_bytes()
    legacy_sha = hashlib.sha256(legacy).hexdigest()
    Storage(founder.data_dir).write(legacy, legacy_sha)
    _fsck_indexes_one(founder.data_dir)  # what start-up's journal cannot know of
    founder.start()
    assert legacy_sha in held(founder)
    wait_for(lambda: any("not a storable instance" in row[3] for row in _outbox(founder)), 60)
    [(_sop, attempts, next_try, error)] = _outbox(founder)
    assert attempts == 1 and next_try == float("inf") and "(7FE0,0010)" in error
    # Replication goes on: a good instance stored afterwards arrives, the parked copy
    # is still not retried, and the member holds nothing refused.
    count = len(held(founder))
    assert storescu(founder, [one_file_per_instance()[0]]) == []
    assert len(held(founder)) == count + 1
    wait_for(lambda: set(held(b)) == set(held(founder)) - {legacy_sha}, 60)
    wait_for(lambda: len(_outbox(founder)) == 1, 30)
    assert _outbox(founder)[0][1] == 1
    assert legacy_sha not in held(b)
    assert all(hashlib.sha256(data).hexdigest() == sha for sha, data in held(b).items())
    assert set(held(b)) == set(held(founder)) - {legacy_sha}
    refusals = [r for r in audit_rows(b) if r["action"] == "refusal"]
    assert any("declares 4294967280 bytes" in r["detail"] for r in refusals), refusals


def test_retrieve_counts_what_it_refuses(
    make_node, bad_files: dict[str, Path], tmp_path: Path
) -> None:
    """`pacsmesh retrieve` from a PACS that holds a cut-short instance (here a node that
    stored it before ingest checked): the good one is stored, the bad one refused."""
    source = make_node("source", aet="SOURCE").start()
    ct = Path(get_testdata_file("CT_small.dcm"))
    assert storescu(source, [ct]) == []
    source.stop()
    legacy = bad_files["truncated"].read_bytes()
    Storage(source.data_dir).write(legacy, hashlib.sha256(legacy).hexdigest())
    _fsck_indexes_one(source.data_dir)
    source.start()
    study = str(dcmread(ct, stop_before_pixels=True).StudyInstanceUID)
    assert source.status()["instances"] == 2
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "retrieve", "--from",
         f"SOURCE@127.0.0.1:{source.dicom_port}", "--data-dir", str(tmp_path / "pulled"),
         "--aet", "GETSCU", "--study", study, "--method", "get"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[-1] == "completed 1, failed 1, warning 0", result.stdout
    assert "refused: " in result.stderr and "declares 4294967280 bytes" in result.stderr
    pulled = [dataset_bytes(p) for p in (tmp_path / "pulled" / "objects").rglob("*.dcm")]
    good = [dataset_bytes(p) for sha, p in
            ((p.stem, p) for p in (source.data_dir / "objects").rglob("*.dcm"))
            if sha != hashlib.sha256(legacy).hexdigest()]
    assert pulled == good
