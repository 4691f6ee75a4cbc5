"""Faults on one node, with real parts: a real node process, real sockets on loopback, real
SQLite, a real (small) file system, and pynetdicom or DCMTK on the other side.

Every test asks what was lost, and the answer must be nothing: an instance whose store got
a success status is on disk bit for bit, indexed once, and served back; a refused store
leaves neither a file nor an index row; the node keeps answering.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from tests.support import NodeProcess, data_store_dir, dataset_bytes, dcmtk, transfer_syntax

SUCCESS = 0x0000
WARNING_ELEMENTS_DISCARDED = 0xB006
UID_ROOT = "1.2.826.0.1.3680043.8.498.77"  # pydicom's UID root, a branch for these tests


# --- test data ----------------------------------------------------------------------------


def _uid(kind: int, n: int) -> str:
    """Fixed-length UIDs, so every generated instance has the same encoded size."""
    return f"{UID_ROOT}.{kind}.{1_000_000 + n}"  # no leading zeros


def make_ct(
    path: Path, study: int, n: int, size: int = 64, *, drop: tuple[str, ...] = (),
    noise: bool = False,
) -> Path:
    """Write one valid CT instance (explicit VR little endian, ``size``² 16-bit pixels).

    ``drop`` removes attributes from the data set (not from the file meta), to make
    instances an archive must refuse. ``noise``: random pixels, which no compressor
    shrinks (large instances that take real time to send).
    """
    sop_uid = _uid(3, study * 100_000 + n)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid(1, study)
    ds.SeriesInstanceUID = _uid(2, study)
    ds.PatientID = f"FAULT{study}"
    ds.PatientName = "Fault^Test"
    ds.StudyDate = "20240501"
    ds.StudyTime = "120000"
    ds.StudyDescription = "fault injection"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = n + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    pixels = (np.arange(size * size, dtype=np.uint32) * 7 + n * 13) % 4096
    if noise:
        pixels = np.random.default_rng(study * 1000 + n).integers(0, 4096, size * size)
    ds.PixelData = pixels.astype("<u2").tobytes()
    for keyword in drop:
        delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_series(directory: Path, study: int, count: int, size: int = 64) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [make_ct(directory / f"ct{n:04d}.dcm", study, n, size) for n in range(count)]


def sop_uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# --- the node's data dir, as a user would look at it --------------------------------------


def object_files(data_dir: Path) -> list[Path]:
    """Every file under objects/ (whatever its name)."""
    return sorted(p for p in (data_dir / "objects").rglob("*") if p.is_file())


def assert_objects_intact(data_dir: Path) -> dict[str, Path]:
    """Every stored object is whole: its SHA-256 is its name. Return SOP UID -> file."""
    by_uid: dict[str, Path] = {}
    for path in object_files(data_dir):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert path.name == f"{digest}.dcm", f"{path} does not match its hash"
        assert path.parent.name == digest[:2], path
        uid = sop_uid_of(path)
        assert uid not in by_uid, f"{uid} stored twice"
        by_uid[uid] = path
    return by_uid


def leftovers(data_dir: Path, sub: str) -> list[str]:
    d = data_dir / sub
    return sorted(os.listdir(d)) if d.is_dir() else []


# --- a pynetdicom peer ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _send_files_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """``send_c_store(path)`` sends the file's data set bytes untouched (no re-encoding),
    so what the node keeps can be compared bit for bit with the file, and a file with a
    bogus data set goes on the wire as it is."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def _ae(title: str = "FAULTS", dimse_timeout: float = 30, network_timeout: float = 30) -> AE:
    ae = AE(ae_title=title)
    ae.acse_timeout = 10
    ae.dimse_timeout = dimse_timeout
    ae.network_timeout = network_timeout
    return ae


def associate(
    node: NodeProcess, contexts: list[tuple[str, str]], title: str = "FAULTS",
    dimse_timeout: float = 30, network_timeout: float = 30,
) -> Association:
    """An association offering Verification and each (SOP class, transfer syntax)."""
    ae = _ae(title, dimse_timeout, network_timeout)
    ae.add_requested_context(Verification)
    for sop_class, syntax in dict.fromkeys(contexts):
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet)
    assert assoc.is_established, "the node refused the association"
    return assoc


def contexts_for(paths: list[Path]) -> list[tuple[str, str]]:
    out = []
    for path in paths:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        out.append((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    return out


def store(assoc: Association, path: Path) -> int | None:
    """C-STORE one file; its status, or None when no response came (association lost)."""
    if not assoc.is_established:
        return None
    rsp = assoc.send_c_store(path)
    return int(rsp.Status) if "Status" in rsp else None


def echo_on(assoc: Association) -> int | None:
    rsp = assoc.send_c_echo()
    return int(rsp.Status) if "Status" in rsp else None


def echoscu(node: NodeProcess) -> None:
    """A C-ECHO from DCMTK on a fresh association: the node as a new client sees it."""
    result = dcmtk("echoscu", "-aec", node.aet, *node.address, timeout=30)
    assert result.returncode == 0, result.stderr


def find_instances(node: NodeProcess, study_uid: str) -> list[str]:
    """SOP Instance UIDs the node lists for a study (C-FIND, Study Root, IMAGE level)."""
    ae = _ae()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    uids: list[str] = []
    final: int | None = None
    try:
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            assert "Status" in status, "C-FIND got no response"
            if status.Status in (0xFF00, 0xFF01):
                uids.append(str(identifier.SOPInstanceUID))
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    assert final == SUCCESS, f"C-FIND final status {final}"
    return uids


def get_study(
    node: NodeProcess, study_uid: str, contexts: list[tuple[str, str]]
) -> dict[str, bytes]:
    """C-GET a whole study, accepting each class only in the given syntax (so the node
    sends its stored bytes). Returns SOP Instance UID -> data set bytes received."""
    ae = _ae("VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    classes = dict.fromkeys(contexts)
    for sop_class, syntax in classes:
        ae.add_requested_context(sop_class, [syntax])
    received: dict[str, bytes] = {}
    sent_twice: list[str] = []

    def on_store(event: Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in received:
            sent_twice.append(uid)
        received[uid] = event.request.DataSet.getvalue()
        return SUCCESS

    assoc = ae.associate(
        "127.0.0.1", node.dicom_port, ae_title=node.aet,
        ext_neg=[build_role(c, scp_role=True) for c, _ in classes],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        statuses = [
            int(s.Status) for s, _ in assoc.send_c_get(
                query, StudyRootQueryRetrieveInformationModelGet
            ) if "Status" in s
        ]
    finally:
        assoc.release()
    assert statuses and statuses[-1] == SUCCESS, [hex(s) for s in statuses]
    assert sent_twice == []
    return received


def assert_served_bit_exact(node: NodeProcess, study_uid: str, sent: list[Path]) -> None:
    """The node lists exactly ``sent`` for the study and C-GET returns each one's bytes."""
    expected = {sop_uid_of(p): dataset_bytes(p) for p in sent}
    assert sorted(find_instances(node, study_uid)) == sorted(expected)
    received = get_study(node, study_uid, contexts_for(sent))
    assert set(received) == set(expected)
    for uid, data in expected.items():
        assert received[uid] == data, f"{uid} came back different"


def node_alive(node: NodeProcess) -> bool:
    return node.proc is not None and node.proc.poll() is None


# --- 1. SIGKILL in the middle of stores ------------------------------------------------------

SENDERS = 4


def send_all(
    node: NodeProcess, files: list[Path], on_success: Callable[[Path], None] | None = None,
    dimse_timeout: float = 30,
) -> dict[Path, int | None]:
    """Send ``files`` over ``SENDERS`` concurrent associations, each one instance after
    another as a modality does; a sender stops when its association is lost.
    Returns each attempted file's status (None: no response)."""
    results: dict[Path, int | None] = {}
    lock = threading.Lock()

    def sender(n: int) -> None:
        share = files[n::SENDERS]
        assoc = associate(
            node, contexts_for(share[:1]), title=f"MODALITY{n}", dimse_timeout=dimse_timeout
        )
        try:
            for path in share:
                status = store(assoc, path)
                with lock:
                    results[path] = status
                if status is None:
                    return
                if status == SUCCESS and on_success is not None:
                    on_success(path)
        finally:
            if assoc.is_established:
                assoc.release()

    with ThreadPoolExecutor(SENDERS) as pool:
        futures = [pool.submit(sender, n) for n in range(SENDERS)]
        for future in futures:
            future.result(timeout=120)
    return results


def test_sigkill_during_stores_loses_nothing(
    make_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    files = make_series(tmp_path / "series", study=1, count=300, size=128)
    study_uid = _uid(1, 1)
    node = make_node("killed").start()
    data_dir = node.data_dir

    # Four modalities send at once; once 100 stores have been acknowledged, SIGKILL the
    # node (no chance to clean up) while the next ones are being received and written.
    acknowledged: list[Path] = []
    killed = threading.Event()
    lock = threading.Lock()

    def on_success(path: Path) -> None:
        with lock:
            acknowledged.append(path)
            if len(acknowledged) >= 100 and not killed.is_set():
                killed.set()
                node.kill()

    # A short DIMSE timeout: pynetdicom may miss that the connection died under a
    # C-STORE it is waiting on, and then waits this long for the answer.
    results = send_all(node, files, on_success, dimse_timeout=5)
    assert killed.is_set() and not node_alive(node)
    assert set(results.values()) <= {SUCCESS, None}, "only successes, then silence"
    assert 100 <= len(acknowledged) < len(files), "the kill did not land mid-way"

    node.start()  # same data dir, same ports
    # No partial file: temporaries are gone, nothing was quarantined, every object whole.
    assert leftovers(data_dir, "tmp") == []
    assert leftovers(data_dir, "quarantine") == []
    on_disk = assert_objects_intact(data_dir)
    # Every acknowledged instance is there, as sent; index and files agree exactly (an
    # object written just before the kill, but never committed, is indexed now).
    listed = find_instances(node, study_uid)
    assert len(listed) == len(set(listed))
    assert set(listed) == set(on_disk)
    assert node.status()["instances"] == len(on_disk) == len(object_files(data_dir))
    for path in acknowledged:
        stored = on_disk.get(sop_uid_of(path))
        assert stored is not None, f"{path.name} was acknowledged, then lost"
        assert dataset_bytes(stored) == dataset_bytes(path), path.name

    # The senders retry everything: every store succeeds, each instance is there once.
    results = send_all(node, files)
    assert len(results) == len(files) and set(results.values()) == {SUCCESS}
    assert node.status()["instances"] == len(files)
    on_disk = assert_objects_intact(data_dir)
    assert len(object_files(data_dir)) == len(files)
    assert sorted(find_instances(node, study_uid)) == sorted(on_disk)
    for path in files:
        assert dataset_bytes(on_disk[sop_uid_of(path)]) == dataset_bytes(path), path.name
    assert leftovers(data_dir, "conflicts") == []
    assert leftovers(data_dir, "tmp") == []


# --- 2. Disk full -----------------------------------------------------------------------------

PAGE = 4096


@pytest.fixture
def small_disk_node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A node whose data dir is a 3 MB tmpfs; stopped and unmounted whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)], check=True
    )
    node = NodeProcess(data_dir=mount, aet="SMALLDISK")
    try:
        yield node
    finally:
        node.stop()
        if subprocess.run(["umount", str(mount)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)


def remount(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


def free_pages(mount: Path) -> int:
    st = os.statvfs(mount)
    assert st.f_frsize == PAGE
    return st.f_bavail


def settled_free_pages(mount: Path, quiet: float = 1.0, timeout: float = 20.0) -> int:
    """Free pages once the node has stopped writing: the audit trail of what a test just
    did reaches the index a moment later (batched), and takes pages when it does."""
    deadline = time.monotonic() + timeout
    last, since = free_pages(mount), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = free_pages(mount)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise TimeoutError("the node kept writing to its data dir")


def leave_free(mount: Path, pages: int) -> None:
    """Fill the file system with a filler file so exactly ``pages`` pages stay free."""
    filler = mount / "filler"
    filler.unlink(missing_ok=True)
    fill = settled_free_pages(mount) - pages
    assert fill >= 0
    with filler.open("wb") as fh:
        fh.write(bytes(fill * PAGE))
        fh.flush()
        os.fsync(fh.fileno())
    assert free_pages(mount) == pages


def is_out_of_resources(status: int | None) -> bool:
    return status is not None and 0xA700 <= status <= 0xA7FF


def test_disk_full_refuses_stores_and_keeps_serving(
    small_disk_node: NodeProcess, tmp_path: Path
) -> None:
    node = small_disk_node.start()
    mount = node.data_dir
    study_uid = _uid(1, 2)
    # ~100 KB each: about two dozen fit in 3 MB.
    files = make_series(tmp_path / "series", study=2, count=60, size=224)
    ct = contexts_for(files[:1])

    def check_nothing_lost(stored: list[Path]) -> None:
        assert node_alive(node)
        echoscu(node)
        assert node.status()["instances"] == len(stored)
        assert set(assert_objects_intact(mount)) == {sop_uid_of(p) for p in stored}
        assert leftovers(mount, "tmp") == []
        assert_served_bit_exact(node, study_uid, stored)

    # Store until the node says it is out of resources.
    assoc = associate(node, ct)
    stored: list[Path] = []
    refused: Path | None = None
    for path in files:
        status = store(assoc, path)
        if status == SUCCESS:
            stored.append(path)
            continue
        assert is_out_of_resources(status), f"expected 0xA7xx, got {status!r}"
        refused = path
        break
    assert refused is not None, "the 3 MB disk never filled up"
    assert len(stored) >= 5
    # A refusal, not a crash: the same association still answers, and so does the node.
    assert assoc.is_established
    assert echo_on(assoc) == SUCCESS
    assert is_out_of_resources(store(assoc, refused)), "a retry on a full disk must fail too"
    check_nothing_lost(stored)

    # Now each way the disk can be full, deterministically: no room for the object file;
    # then room for the file but not for the index commit (SQLite hits the full disk).
    remount(mount, "16m")
    overhead = object_files(mount)[0].stat().st_size - len(dataset_bytes(stored[0]))
    pages = math.ceil((len(dataset_bytes(refused)) + overhead) / PAGE)
    pending = [p for p in files if p not in stored]

    leave_free(mount, pages - 1)
    log_before = len(node.log())
    assert is_out_of_resources(store(assoc, pending[0]))
    assert "data dir is full" in node.log()[log_before:]
    check_nothing_lost(stored)

    leave_free(mount, pages)
    log_before = len(node.log())
    assert is_out_of_resources(store(assoc, pending[0]))
    assert "database or disk is full" in node.log()[log_before:], node.log()[log_before:]
    # The refused object's file was taken back: the space is free again, nothing dangles.
    assert free_pages(mount) == pages
    assert is_out_of_resources(store(assoc, pending[1])), "the index must stay usable"
    assert echo_on(assoc) == SUCCESS
    check_nothing_lost(stored)

    # Space comes back: stores succeed again, on the same association.
    (mount / "filler").unlink()
    remount(mount, "64m")
    for path in pending:
        assert store(assoc, path) == SUCCESS, path.name
    assoc.release()
    check_nothing_lost(files)

    # And a restart finds the same archive.
    node.stop()
    node.start()
    check_nothing_lost(files)
    assert leftovers(mount, "quarantine") == []


# --- 3. Garbage on the DICOM port ------------------------------------------------------------


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def associate_rq(called: str, calling: str) -> bytes:
    """A complete, valid A-ASSOCIATE-RQ PDU proposing Verification (PS3.8 9.3.2)."""
    context = bytes([1, 0, 0, 0]) + _item(0x30, b"1.2.840.10008.1.1") + _item(
        0x40, b"1.2.840.10008.1.2"
    )
    user_info = _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.9")
    body = (
        struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
        + bytes(32) + _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, context)
        + _item(0x50, user_info)
    )
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def raw_connect(node: NodeProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.dicom_port), timeout=5)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the node sends until it closes the connection; fails if it never does."""
    data = b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        except TimeoutError:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the node kept the connection open; it sent {data[:32]!r}")


def test_valid_raw_associate_request_is_accepted(node: NodeProcess) -> None:
    """The hand-made A-ASSOCIATE-RQ below is right: truncating it is the only fault."""
    with raw_connect(node) as sock:
        sock.sendall(associate_rq(node.aet, "RAW"))
        header = sock.recv(6)
        assert header[:1] == b"\x02", header  # A-ASSOCIATE-AC


# Bytes that are not a DICOM conversation.
GARBAGE: dict[str, bytes] = {
    "random-bytes": b"\xa5" + random.Random(7).randbytes(4095),
    "http-request": b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n\r\n",
    "tls-client-hello": bytes.fromhex("160301006e0100006a0303") + random.Random(8).randbytes(106),
    "associate-rq-with-garbage-body": (
        struct.pack(">BBI", 0x01, 0, 512) + random.Random(9).randbytes(512)
    ),
    "p-data-before-association": struct.pack(">BBI", 0x04, 0, 16) + bytes(16),
    "release-before-association": struct.pack(">BBI", 0x05, 0, 4) + bytes(4),
    "truncated-associate-rq": associate_rq("PACSMESH", "RAW")[:40],
    "pdu-header-only": b"\x01\x00",
}
# Garbage the node can tell is garbage before the sender stops (for the others, the
# truncated ones, it must wait for the rest of the PDU like any DICOM peer).
RECOGNISABLE = [name for name in GARBAGE if "truncated" not in name and "only" not in name]
REFUSALS = (b"\x03", b"\x07")  # A-ASSOCIATE-RJ, A-ABORT


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_then_hang_up_closes_that_connection_only(
    node: NodeProcess, name: str
) -> None:
    """A sender writes garbage and hangs up: the node drops that connection at once,
    answering nothing or a refusal; an association open all along is untouched."""
    bystander = associate(node, [])
    try:
        with raw_connect(node) as sock:
            sock.sendall(GARBAGE[name])
            sock.shutdown(socket.SHUT_WR)
            answer = read_until_closed(sock, timeout=5)
        assert answer == b"" or answer[:1] in REFUSALS, answer[:16]
        assert node_alive(node)
        assert echo_on(bystander) == SUCCESS
        echoscu(node)
    finally:
        bystander.release()


def test_garbage_from_a_sender_that_stays_is_refused(node: NodeProcess) -> None:
    """Senders that write garbage and keep the connection: each is refused (A-ABORT)
    without waiting, while they are all still connected others are served."""
    bystander = associate(node, [])
    socks: list[socket.socket] = []
    try:
        for name in RECOGNISABLE:
            sock = raw_connect(node)
            socks.append(sock)
            sock.sendall(GARBAGE[name])
            sock.settimeout(5)
            first = sock.recv(1)
            assert first in REFUSALS, (name, first)
        truncated = raw_connect(node)
        socks.append(truncated)
        truncated.sendall(GARBAGE["truncated-associate-rq"])
        assert node_alive(node)
        assert echo_on(bystander) == SUCCESS
        echoscu(node)
        other = associate(node, [])
        assert echo_on(other) == SUCCESS
        other.release()
    finally:
        for sock in socks:
            sock.close()
        bystander.release()
    echoscu(node)


# The node's ARTIM timer (its ACSE timeout, 30 s): how long a connection may stay silent
# before it is dropped (PS3.8 9.1.5).
ARTIM = 30.0


def test_silent_connections_do_not_block_others_and_are_dropped(node: NodeProcess) -> None:
    bystander = associate(node, [], network_timeout=ARTIM * 3)
    silent = [raw_connect(node) for _ in range(5)]
    try:
        start = time.monotonic()
        echoscu(node)
        other = associate(node, [])
        assert echo_on(other) == SUCCESS
        other.release()
        assert echo_on(bystander) == SUCCESS
        assert time.monotonic() - start < 5, "silent connections held up others"
        # They are not kept for ever (each holds a thread and an association slot).
        for sock in silent:
            assert read_until_closed(sock, timeout=ARTIM + 15) == b""
        assert echo_on(bystander) == SUCCESS
    finally:
        for sock in silent:
            sock.close()
        bystander.release()
    echoscu(node)


# --- 4. Malformed data sets -------------------------------------------------------------------


def _with_dataset(template: Path, out: Path, dataset: bytes) -> Path:
    """``template``'s preamble and file meta, followed by ``dataset`` as raw bytes."""
    raw = template.read_bytes()
    out.write_bytes(raw[: len(raw) - len(dataset_bytes(template))] + dataset)
    return out


def test_malformed_datasets_are_refused_and_change_nothing(
    node: NodeProcess, tmp_path: Path
) -> None:
    good = make_ct(tmp_path / "good.dcm", study=4, n=0)
    template = make_ct(tmp_path / "template.dcm", study=4, n=1)
    body = dataset_bytes(template)
    study_uid = _uid(1, 4)
    bad: dict[str, Path] = {
        "no-sop-instance-uid": make_ct(
            tmp_path / "nosop.dcm", study=4, n=2, drop=("SOPInstanceUID",)
        ),
        "no-study-instance-uid": make_ct(
            tmp_path / "nostudy.dcm", study=4, n=3, drop=("StudyInstanceUID",)
        ),
        "no-series-instance-uid": make_ct(
            tmp_path / "noseries.dcm", study=4, n=4, drop=("SeriesInstanceUID",)
        ),
        "random-bytes": _with_dataset(
            template, tmp_path / "random.dcm", random.Random(4).randbytes(2048)
        ),
        "huge-element-length": _with_dataset(
            template, tmp_path / "huge.dcm",
            struct.pack("<HH2sHI", 0x0008, 0x0016, b"OB", 0, 0xFFFFFFF0) + b"\x00" * 64,
        ),
        "truncated-header": _with_dataset(template, tmp_path / "cut.dcm", body[:100]),
    }
    assoc = associate(node, contexts_for([good]))
    assert store(assoc, good) == SUCCESS
    before = node.status()
    files_before = object_files(node.data_dir)

    for name, path in bad.items():
        status = store(assoc, path)
        assert status is not None, f"{name}: the node dropped the association"
        assert 0xC000 <= status <= 0xCFFF or 0xA900 <= status <= 0xA9FF, (name, hex(status))
        assert echo_on(assoc) == SUCCESS, name
    assoc.release()

    assert node_alive(node)
    echoscu(node)
    assert node.status() == before
    assert object_files(node.data_dir) == files_before
    assert leftovers(node.data_dir, "tmp") == []
    assert leftovers(node.data_dir, "conflicts") == []
    assert_served_bit_exact(node, study_uid, [good])
    assert "Traceback" not in node.log()


# --- 5. Same SOP Instance UID, different bytes -------------------------------------------------


@pytest.mark.parametrize("sample", ["color-pl.dcm", "JPEG-LL.dcm"])
def test_duplicate_uid_with_different_bytes_keeps_the_first(
    node: NodeProcess, tmp_path: Path, sample: str
) -> None:
    original = data_store_dir() / sample
    header = dcmread(original, stop_before_pixels=True)
    changed_ds = dcmread(original)
    changed_ds.StudyDescription = "CHANGED AFTER THE FACT"
    changed = tmp_path / "changed.dcm"
    changed_ds.save_as(changed)
    assert transfer_syntax(changed) == transfer_syntax(original)
    assert dataset_bytes(changed) != dataset_bytes(original)
    study_uid = str(header.StudyInstanceUID)
    sop_uid = str(header.SOPInstanceUID)

    assoc = associate(node, contexts_for([original]))
    try:
        assert store(assoc, original) == SUCCESS
        assert store(assoc, changed) == WARNING_ELEMENTS_DISCARDED
        assert store(assoc, original) == SUCCESS  # the same bytes again: nothing new
    finally:
        assoc.release()

    assert node.status()["instances"] == 1
    stored = assert_objects_intact(node.data_dir)
    assert list(stored) == [sop_uid]
    assert dataset_bytes(stored[sop_uid]) == dataset_bytes(original)
    assert_served_bit_exact(node, study_uid, [original])  # the first copy, bit for bit

    # The conflicting copy is kept aside, whole, and the conflict is on record.
    kept = sorted((node.data_dir / "conflicts").iterdir())
    assert len(kept) == 1
    digest = hashlib.sha256(kept[0].read_bytes()).hexdigest()
    assert kept[0].name == f"{digest}.dcm"
    assert dataset_bytes(kept[0]) == dataset_bytes(changed)
    assert "Traceback" not in node.log()

    node.stop()
    with sqlite3.connect(node.data_dir / "index.sqlite") as db:
        rows = db.execute(
            "SELECT sop_uid, stored_sha256, received_sha256, kept_copy FROM conflicts"
        ).fetchall()
        instances = db.execute("SELECT sop_uid, sha256 FROM instances").fetchall()
    db.close()
    assert rows == [(sop_uid, stored[sop_uid].stem, digest, 1)]
    assert instances == [(sop_uid, stored[sop_uid].stem)]
