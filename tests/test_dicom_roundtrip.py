"""Real images through C-STORE, C-FIND, C-GET and C-MOVE, with DCMTK as the other side.

Bit-exact when the requester accepts the stored transfer syntax; pixel-identical when a
viewer that takes only uncompressed data makes the node decompress.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from tests.support import (
    NodeProcess,
    dataset_bytes,
    dcmtk,
    free_port,
    getscu_instance,
    one_file_per_instance,
    received_files,
    sop_instance_uid,
    storescu,
    transfer_syntax,
)

IMPLICIT = "1.2.840.10008.1.2"
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
SAMPLES = one_file_per_instance()


class StoreSCP:
    """DCMTK storescp as a C-MOVE destination."""

    def __init__(
        self, directory: Path, aet: str, accept_all: bool, bit_preserving: bool = False,
        implicit_only: bool = False,
    ) -> None:
        self.directory = directory
        self.aet = aet
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        args = ["storescp", "-aet", aet, "-od", str(directory)]
        if accept_all:
            args.append("+xa")
        if bit_preserving:
            args.append("+B")
        if implicit_only:
            args.append("+xi")
        self.proc = subprocess.Popen([*args, str(self.port)], stderr=subprocess.PIPE)

    @property
    def address(self) -> list[str]:
        return ["127.0.0.1", str(self.port)]

    @property
    def modality(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def destinations(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StoreSCP]]:
    root = tmp_path_factory.mktemp("destinations")
    scps = {
        "all": StoreSCP(root / "all", "ALLSYNTAXES", accept_all=True, bit_preserving=True),
        "plain": StoreSCP(root / "plain", "PLAINONLY", accept_all=False),
        # Receives storescu's sends bit-preserved: the reference for what went on the wire
        # (DCMTK re-encodes some elements, e.g. group lengths, when it sends a file).
        "wire": StoreSCP(root / "wire", "WIRE", accept_all=True, bit_preserving=True),
        # storescp with +xa prefers explicit VR: implicit VR data needs its own reference.
        "wire-implicit": StoreSCP(
            root / "wire-implicit", "WIREIMPLICIT", accept_all=False, bit_preserving=True,
            implicit_only=True,
        ),
    }
    yield scps
    for scp in scps.values():
        scp.stop()


@pytest.fixture(scope="module")
def loaded(
    tmp_path_factory: pytest.TempPathFactory, destinations: dict[str, StoreSCP]
) -> Iterator[NodeProcess]:
    """One node holding every sample, stored with storescu."""
    root = tmp_path_factory.mktemp("roundtrip")
    node = NodeProcess(
        data_dir=root / "node", aet="ARCHIVE",
        modalities=tuple(d.modality for d in destinations.values()),
    ).start()
    try:
        assert storescu(node, SAMPLES) == []
        assert storescu(destinations["wire"], SAMPLES) == []
        implicit = [p for p in SAMPLES if transfer_syntax(p) == IMPLICIT]
        assert storescu(destinations["wire-implicit"], implicit) == []
        yield node
    finally:
        node.stop()


def _study_uids() -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in SAMPLES}


def test_echo(loaded: NodeProcess) -> None:
    result = dcmtk("echoscu", "-aec", loaded.aet, *loaded.address)
    assert result.returncode == 0, result.stderr


def test_every_sample_is_stored_once(loaded: NodeProcess) -> None:
    status = loaded.status()
    assert status["instances"] == len(SAMPLES)
    assert status["studies"] == len(_study_uids())
    stored = list((loaded.data_dir / "objects").rglob("*.dcm"))
    assert len(stored) == len(SAMPLES)
    assert status["bytes"] == sum(p.stat().st_size for p in stored)


def _stored(node: NodeProcess) -> dict[str, Path]:
    return {sop_instance_uid(p): p for p in (node.data_dir / "objects").rglob("*.dcm")}


def test_store_keeps_the_received_bytes(
    loaded: NodeProcess, destinations: dict[str, StoreSCP]
) -> None:
    """The archive holds exactly the data set bytes that came over the wire."""
    wire = received_files(destinations["wire"].directory)
    wire_implicit = received_files(destinations["wire-implicit"].directory)
    stored = _stored(loaded)
    assert set(stored) == set(wire) == {sop_instance_uid(p) for p in SAMPLES}
    for uid, path in stored.items():
        syntax = transfer_syntax(path)
        expected = wire_implicit[uid] if syntax == IMPLICIT else wire[uid]
        assert transfer_syntax(expected) == syntax, uid
        assert dataset_bytes(path) == dataset_bytes(expected), uid


def test_find_study_level_lists_every_study(loaded: NodeProcess, tmp_path: Path) -> None:
    result = dcmtk(
        "findscu", "-S", "-aec", loaded.aet, "-X", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
        "-k", "NumberOfStudyRelatedInstances", *loaded.address,
    )
    assert result.returncode == 0, result.stderr
    responses = [dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    assert {str(r.StudyInstanceUID) for r in responses} == _study_uids()
    assert sum(int(r.NumberOfStudyRelatedInstances) for r in responses) == len(SAMPLES)


EXPLICIT = "1.2.840.10008.1.2.1"


# getscu writing bit for bit (+B) offers explicit VR little endian only; the other
# stored syntaxes are covered by the pynetdicom requester below.
@pytest.mark.parametrize(
    "sample", [p for p in SAMPLES if transfer_syntax(p) == EXPLICIT], ids=lambda p: p.name
)
def test_getscu_in_stored_syntax_is_bit_exact(
    loaded: NodeProcess, tmp_path: Path, sample: Path
) -> None:
    uid = sop_instance_uid(sample)
    received = getscu_instance(loaded, tmp_path, uid)
    assert transfer_syntax(received) == transfer_syntax(sample)
    assert dataset_bytes(received) == dataset_bytes(_stored(loaded)[uid])


def _pynetdicom_get(node: NodeProcess, sample: Path) -> tuple[str, bytes]:
    """C-GET one instance offering only its stored syntax, as a pynetdicom viewer would."""
    header = dcmread(sample, stop_before_pixels=True)
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(header.SOPClassUID, [transfer_syntax(sample)])
    received: list[tuple[str, bytes]] = []

    def on_store(event: Event) -> int:
        received.append((event.context.transfer_syntax, event.request.DataSet.getvalue()))
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1", node.dicom_port, ae_title=node.aet,
        ext_neg=[build_role(header.SOPClassUID, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = header.StudyInstanceUID
    query.SeriesInstanceUID = header.SeriesInstanceUID
    query.SOPInstanceUID = header.SOPInstanceUID
    statuses = [s.Status for s, _ in assoc.send_c_get(
        query, StudyRootQueryRetrieveInformationModelGet
    ) if s]
    assoc.release()
    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    assert len(received) == 1
    return received[0]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_get_in_stored_syntax_is_bit_exact(loaded: NodeProcess, sample: Path) -> None:
    syntax, data = _pynetdicom_get(loaded, sample)
    assert syntax == transfer_syntax(sample)
    assert data == dataset_bytes(_stored(loaded)[sop_instance_uid(sample)])


COMPRESSED = [p for p in SAMPLES if transfer_syntax(p) not in UNCOMPRESSED]


@pytest.mark.parametrize("sample", COMPRESSED, ids=lambda p: p.name)
def test_get_by_uncompressed_only_viewer_is_pixel_identical(
    loaded: NodeProcess, tmp_path: Path, sample: Path
) -> None:
    received = getscu_instance(loaded, tmp_path, sop_instance_uid(sample))  # DCMTK default: plain
    assert transfer_syntax(received) in UNCOMPRESSED
    original, copy = dcmread(sample), dcmread(received)
    assert np.array_equal(original.pixel_array, copy.pixel_array)
    assert copy.SOPInstanceUID == original.SOPInstanceUID


def _movescu(node: NodeProcess, destination: StoreSCP, study_uid: str) -> str:
    result = dcmtk(
        "movescu", "-S", "-aec", node.aet, "-aem", destination.aet,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
        *node.address,
    )
    return result.stderr + result.stdout


def test_move_to_destination_accepting_all_syntaxes_is_bit_exact(
    loaded: NodeProcess, destinations: dict[str, StoreSCP]
) -> None:
    scp = destinations["all"]
    for study_uid in sorted(_study_uids()):
        output = _movescu(loaded, scp, study_uid)
        assert "Failed" not in output or "Failed Suboperations    : 0" in output, output
    received = received_files(scp.directory)
    stored = _stored(loaded)
    assert set(received) == set(stored)
    for uid, path in stored.items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path), uid


def test_move_to_uncompressed_only_destination_is_pixel_identical(
    loaded: NodeProcess, destinations: dict[str, StoreSCP]
) -> None:
    scp = destinations["plain"]
    for study_uid in sorted({str(dcmread(p, stop_before_pixels=True).StudyInstanceUID)
                             for p in COMPRESSED}):
        _movescu(loaded, scp, study_uid)
    received = received_files(scp.directory)
    for sample in COMPRESSED:
        copy = dcmread(received[sop_instance_uid(sample)])
        assert copy.file_meta.TransferSyntaxUID in UNCOMPRESSED
        assert np.array_equal(dcmread(sample).pixel_array, copy.pixel_array), sample


def test_move_to_unknown_destination_is_refused(loaded: NodeProcess) -> None:
    output = _movescu_unknown(loaded)
    assert "MoveDestinationUnknown" in output or "a801" in output.lower(), output


def _movescu_unknown(node: NodeProcess) -> str:
    result = dcmtk(
        "movescu", "-S", "-aec", node.aet, "-aem", "NOWHERE",
        "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3", *node.address,
    )
    return result.stderr + result.stdout
