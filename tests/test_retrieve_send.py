"""``pacsmesh retrieve`` from a real Orthanc and ``pacsmesh send`` to DCMTK storescp.

Orthanc keeps the Part 10 bytes it was sent, so what we pulled is compared with its
files (data set part: the file meta header is each archive's own).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from node.dicom.retrieve_scp import move_contexts
from node.dicom.scu import AssociationFailed, with_retries
from node.dicom.send_scu import Outgoing
from tests.orthanc import OrthancProcess
from tests.support import (
    NodeProcess,
    dataset_bytes,
    dcmtk,
    free_port,
    one_file_per_instance,
    received_files,
    sop_instance_uid,
    storescu,
    transfer_syntax,
)
from tests.test_cli import one_error_line, pacsmesh

MOVE_PORT = free_port()  # where Orthanc may C-MOVE to: a temporary SCP of `retrieve`
STUDY_RG3 = "1.3.6.1.4.1.5962.1.2.11.20040826185059.5457"  # 3 syntaxes: J2K, J2K-LL, plain
STUDY_NM1 = "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457"  # JPEG lossless + plain
STUDY_SC = "1.2.826.0.1.3680043.8.498.12406831542731051035295345080039845114"  # 8 instances
STUDY_RG1 = "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"
STUDY_US1 = "1.3.6.1.4.1.5962.1.2.13.20040826185059.5457"
PATIENT_MR2 = "5MR2"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    server = OrthancProcess(tmp_path_factory.mktemp("orthanc"),
                            modalities={"PULLER": ("127.0.0.1", MOVE_PORT)}).start()
    try:
        assert storescu(server, one_file_per_instance()) == []
        yield server
    finally:
        server.stop()


def _data_set(raw: bytes, tmp: Path) -> bytes:
    tmp.write_bytes(raw)
    return dataset_bytes(tmp)


def orthanc_data_sets(orthanc: OrthancProcess, study_uid: str, tmp: Path) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes Orthanc holds, for one study."""
    found = orthanc_post(orthanc, "/tools/find", {"Level": "Instance", "Expand": True,
                                                  "Query": {"StudyInstanceUID": study_uid}})
    out = {}
    for inst in found:
        url = f"http://127.0.0.1:{orthanc.http_port}/instances/{inst['ID']}/file"
        with urllib.request.urlopen(url, timeout=10) as rsp:
            out[inst["MainDicomTags"]["SOPInstanceUID"]] = _data_set(rsp.read(), tmp / "o.dcm")
    return out


def orthanc_post(orthanc: OrthancProcess, path: str, body: dict) -> list[dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}{path}",
                                 data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as rsp:
        return json.loads(rsp.read())


def archive_data_sets(data_dir: Path) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of every object stored in ``data_dir``."""
    return {sop_instance_uid(p): dataset_bytes(p) for p in (data_dir / "objects").rglob("*.dcm")}


def retrieve(tmp_path: Path, orthanc: OrthancProcess, *args: str, data: str = "data"):
    return pacsmesh("retrieve", "--from", orthanc.remote, "--data-dir", str(tmp_path / data),
                    "--aet", "PULLER", *args, tmp_path=tmp_path)


def test_retrieve_studies_by_cget_bit_exact(orthanc: OrthancProcess, tmp_path: Path) -> None:
    expected: dict[str, bytes] = {}
    for study in (STUDY_RG3, STUDY_NM1, STUDY_SC):
        result = retrieve(tmp_path, orthanc, "--study", study)
        assert result.returncode == 0, result.stderr
        held = orthanc_data_sets(orthanc, study, tmp_path)
        assert "by C-GET" in result.stdout
        assert result.stdout.splitlines()[-1] == f"completed {len(held)}, failed 0, warning 0"
        expected.update(held)
    assert archive_data_sets(tmp_path / "data") == expected


def test_retrieve_a_patient(orthanc: OrthancProcess, tmp_path: Path) -> None:
    result = retrieve(tmp_path, orthanc, "--patient", PATIENT_MR2)
    assert result.returncode == 0, result.stderr
    stored = archive_data_sets(tmp_path / "data")
    assert len(stored) == 3
    assert stored == orthanc_data_sets(orthanc, "1.3.6.1.4.1.5962.1.2.5.20040826185059.5457",
                                       tmp_path)


def test_retrieve_by_cmove_to_a_temporary_scp(orthanc: OrthancProcess, tmp_path: Path) -> None:
    result = retrieve(tmp_path, orthanc, "--study", STUDY_RG1, "--method", "move",
                      "--port", str(MOVE_PORT))
    assert result.returncode == 0, result.stderr
    assert "by C-MOVE" in result.stdout
    assert result.stdout.splitlines()[-1] == "completed 3, failed 0, warning 0"
    assert archive_data_sets(tmp_path / "data") == orthanc_data_sets(orthanc, STUDY_RG1, tmp_path)


def test_cmove_without_node_or_port_is_one_line(orthanc: OrthancProcess, tmp_path: Path) -> None:
    result = retrieve(tmp_path, orthanc, "--study", STUDY_RG1, "--method", "move")
    assert result.returncode == 1
    assert "--port" in one_error_line(result)


def test_cmove_from_an_ae_the_peer_does_not_know(
    orthanc: OrthancProcess, tmp_path: Path
) -> None:
    result = pacsmesh("retrieve", "--from", orthanc.remote, "--data-dir", str(tmp_path / "d"),
                      "--aet", "STRANGER", "--study", STUDY_RG1, "--method", "move",
                      "--port", str(free_port()), tmp_path=tmp_path)
    assert result.returncode == 1
    assert "does it know STRANGER as a modality?" in one_error_line(result)


@pytest.mark.parametrize("args, words", [
    (("--from", "nonsense", "--study", "1.2.3"), "AET@HOST:PORT"),
    (("--from", "X@127.0.0.1:104"), "exactly one of"),
])
def test_retrieve_bad_input(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    result = pacsmesh("retrieve", "--data-dir", str(tmp_path / "d"), *args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert words in one_error_line(result)


def test_retrieve_unknown_study(orthanc: OrthancProcess, tmp_path: Path) -> None:
    result = retrieve(tmp_path, orthanc, "--study", "1.2.3.4.5.6.7")
    assert result.returncode == 1
    assert "no study matching study 1.2.3.4.5.6.7" in one_error_line(result)


def running_puller(
    make_node: Callable[..., NodeProcess], dicom_port: int | None = None
) -> NodeProcess:
    """A node "PULLER" whose data dir's config names its AE title and port, as
    `retrieve` reads them to reach the node running there."""
    node = make_node("data", aet="PULLER", **({"dicom_port": dicom_port} if dicom_port else {}))
    node.data_dir.mkdir()
    (node.data_dir / "pacsmesh.toml").write_text(
        f'aet = "PULLER"\ndicom_port = {node.dicom_port}\nbind = "127.0.0.1"\n')
    return node.start()


@pytest.mark.parametrize("method, port", [("get", None), ("move", MOVE_PORT)])
def test_retrieve_into_a_running_node(
    orthanc: OrthancProcess, make_node, tmp_path: Path, method: str, port: int | None
) -> None:
    """C-GET: received, then C-STOREd to the node; C-MOVE: straight to the node."""
    node = running_puller(make_node, port)
    result = pacsmesh("retrieve", "--from", orthanc.remote, "--data-dir", str(node.data_dir),
                      "--study", STUDY_RG3, "--method", method, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "completed 3, failed 0, warning 0"
    assert node.status()["instances"] == 3
    assert archive_data_sets(node.data_dir) == orthanc_data_sets(orthanc, STUDY_RG3, tmp_path)


def us1_files() -> list[Path]:
    return sorted(sample_files(STUDY_US1).values())


class MoveOnlyPeer:
    """A real pynetdicom Q/R SCP that offers C-FIND and C-MOVE but no C-GET."""

    def __init__(self, files: list[Path], destinations: dict[str, tuple[str, int]]) -> None:
        self.files = files
        self.destinations = destinations
        self.port = free_port()
        self.ae = AE("MOVEONLY")
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
        self.ae.requested_contexts = AllStoragePresentationContexts[:120]
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_FIND, self.on_find), (evt.EVT_C_MOVE, self.on_move)])

    @property
    def remote(self) -> str:
        return f"MOVEONLY@127.0.0.1:{self.port}"

    def on_find(self, event):
        """Without SOPClassesInStudy, as many PACS: `retrieve` asks at IMAGE level."""
        if event.identifier.QueryRetrieveLevel == "IMAGE":
            for path in self.files:
                header = dcmread(path, stop_before_pixels=True)
                ds = Dataset()
                ds.QueryRetrieveLevel = "IMAGE"
                ds.SOPClassUID = header.SOPClassUID
                ds.SOPInstanceUID = header.SOPInstanceUID
                yield 0xFF00, ds
            return
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = dcmread(self.files[0], stop_before_pixels=True).StudyInstanceUID
        yield 0xFF00, ds

    def on_move(self, event):
        destination = self.destinations.get(str(event.move_destination).strip())
        if destination is None:
            yield None, None
            return
        # The files' own syntaxes, so the compressed ones can go too.
        contexts = move_contexts(_outgoing(self.files))
        yield (*destination, {"contexts": contexts})
        yield len(self.files)
        for path in self.files:
            yield 0xFF00, dcmread(path)

    def stop(self) -> None:
        self.server.shutdown()


def test_peer_without_cget_moves_to_the_running_node(make_node, tmp_path: Path) -> None:
    node = running_puller(make_node)
    peer = MoveOnlyPeer(us1_files(), {"PULLER": ("127.0.0.1", node.dicom_port)})
    try:
        result = pacsmesh("retrieve", "--from", peer.remote, "--data-dir", str(node.data_dir),
                          "--study", STUDY_US1, tmp_path=tmp_path)
    finally:
        peer.stop()
    assert result.returncode == 0, result.stderr
    assert "by C-MOVE" in result.stdout
    assert result.stdout.splitlines()[-1] == "completed 3, failed 0, warning 0"
    assert node.status()["instances"] == 3


class FlakyGetPeer:
    """A real pynetdicom C-GET SCP whose first C-GET fails one sub-operation."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.gets = 0
        self.port = free_port()
        ae = AE("FLAKYGET")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        for cx in move_contexts(_outgoing(self.files)):
            ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax,
                                     scu_role=True, scp_role=True)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_FIND, MoveOnlyPeer.on_find.__get__(self)),
            (evt.EVT_C_GET, self.on_get)])

    def on_get(self, event):
        self.gets += 1
        yield len(self.files)
        for n, path in enumerate(self.files):
            if self.gets == 1 and n == 0:
                unsendable = Dataset()  # no context for it: pynetdicom counts a failure
                unsendable.SOPClassUID = "1.2.3.4"
                unsendable.SOPInstanceUID = "1.2.3.4.5"
                yield 0xFF00, unsendable
            else:
                yield 0xFF00, dcmread(path)


def _outgoing(files: list[Path]) -> list[Outgoing]:
    return [Outgoing(p, "", str(dcmread(p).SOPClassUID), transfer_syntax(p)) for p in files]


def test_retrieve_retries_failed_sub_operations(tmp_path: Path) -> None:
    peer = FlakyGetPeer(us1_files())
    try:
        result = pacsmesh("retrieve", "--from", f"FLAKYGET@127.0.0.1:{peer.port}", "--study",
                          STUDY_US1, "--data-dir", str(tmp_path / "data"), tmp_path=tmp_path)
    finally:
        peer.server.shutdown()
    assert result.returncode == 0, result.stderr
    assert peer.gets == 2
    assert result.stdout.splitlines()[-1] == "completed 3, failed 0, warning 0"


# --- send ----------------------------------------------------------------------------


def imported(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    result = pacsmesh("import", "--data-dir", str(data_dir),
                      *map(str, one_file_per_instance()), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    return data_dir


def send_to_storescp(
    tmp_path: Path, data_dir: Path, *flags: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Path]]:
    """``pacsmesh send`` of STUDY_RG3 to a DCMTK storescp; what it wrote, by SOP UID."""
    port = free_port()
    out = tmp_path / "got"
    out.mkdir()
    proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out), *flags, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if dcmtk("echoscu", "-aec", "STORESCP", "127.0.0.1", str(port)).returncode == 0:
                break
        result = pacsmesh("send", "--to", f"STORESCP@127.0.0.1:{port}", "--study", STUDY_RG3,
                          "--data-dir", str(data_dir), tmp_path=tmp_path)
    finally:
        proc.terminate()
        proc.wait()
    assert result.returncode == 0, result.stderr
    return result, received_files(out)


def sample_files(study_uid: str) -> dict[str, Path]:
    return {sop_instance_uid(p): p for p in one_file_per_instance()
            if str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) == study_uid}


def test_send_to_storescp_bit_exact(tmp_path: Path) -> None:
    data_dir = imported(tmp_path)
    # +B: storescp writes the data set exactly as it came; +xa: accepts every syntax.
    result, got = send_to_storescp(tmp_path, data_dir, "+B", "+xa")
    assert result.stdout.splitlines()[-1] == "completed 3, failed 0, warning 0"
    stored = archive_data_sets(data_dir)
    assert {transfer_syntax(p) for p in got.values()} == {
        "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
    assert {uid: dataset_bytes(p) for uid, p in got.items()} == {
        uid: stored[uid] for uid in sample_files(STUDY_RG3)}


def test_send_decompresses_for_a_peer_taking_only_uncompressed(tmp_path: Path) -> None:
    _, got = send_to_storescp(tmp_path, imported(tmp_path))
    assert set(got) == set(sample_files(STUDY_RG3))
    assert {transfer_syntax(p) for p in got.values()} <= {"1.2.840.10008.1.2.1",
                                                           "1.2.840.10008.1.2"}


class FlakyStoreSCP:
    """Refuses each instance ``refusals`` times (out of resources), then takes it."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.tries: dict[str, int] = {}
        self.port = free_port()
        ae = AE("FLAKY")
        ae.supported_contexts = AllStoragePresentationContexts
        for cx in ae.supported_contexts:
            cx.transfer_syntax = [*cx.transfer_syntax, "1.2.840.10008.1.2.4.90",
                                  "1.2.840.10008.1.2.4.91"]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        self.tries[uid] = self.tries.get(uid, 0) + 1
        return 0xA700 if self.tries[uid] <= self.refusals else 0x0000


@pytest.mark.parametrize("refusals, code, last", [
    (1, 0, "completed 3, failed 0, warning 0"),
    (9, 1, "completed 0, failed 3, warning 0"),
])
def test_send_retries_a_flaky_destination(
    tmp_path: Path, refusals: int, code: int, last: str
) -> None:
    data_dir = imported(tmp_path)
    peer = FlakyStoreSCP(refusals)
    try:
        result = pacsmesh("send", "--to", f"FLAKY@127.0.0.1:{peer.port}", "--study", STUDY_RG3,
                          "--data-dir", str(data_dir), tmp_path=tmp_path)
    finally:
        peer.server.shutdown()
    assert result.returncode == code, result.stderr
    assert result.stdout.splitlines()[-1] == last
    assert set(peer.tries.values()) == {min(refusals + 1, 4)}


def test_send_unknown_study_is_one_line(tmp_path: Path) -> None:
    data_dir = imported(tmp_path)
    result = pacsmesh("send", "--to", "X@127.0.0.1:104", "--study", "1.2.3",
                      "--data-dir", str(data_dir), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "no study 1.2.3" in one_error_line(result)


def test_with_retries_backs_off_and_gives_the_last_result() -> None:
    pauses: list[float] = []
    calls: list[int] = []

    def attempt(n: int) -> int:
        calls.append(n)
        if n == 0:
            raise AssociationFailed("dropped")
        return n

    assert with_retries(attempt, lambda r: r >= 2, (0.5, 1.0, 2.0), pauses.append) == 2
    assert calls == [0, 1, 2] and pauses == [0.5, 1.0]
    assert with_retries(lambda n: n, lambda r: False, (0.5, 1.0), pauses.append) == 2
