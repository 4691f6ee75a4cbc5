"""C-GET and C-MOVE of a whole study on the direct path (node/dicom/direct.py), with
DCMTK and pynetdicom on the other side: the bytes that arrive are the stored ones (or
their Implicit VR LE re-encoding, for a peer that takes nothing else), and the counts of
failed and warning sub-operations are right when the peer refuses some of them.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet
from pynetdicom.transport import ThreadedAssociationServer

from node.transcode import explicit_to_implicit
from tests.support import (
    NodeProcess,
    dataset_bytes,
    dcmtk,
    free_port,
    received_files,
    storescu,
    transfer_syntax,
)
from tests.test_dicom_roundtrip import StoreSCP

IMPLICIT = "1.2.840.10008.1.2"
COUNT = 12
# The refusing peer's answers, by instance number: out of resources (a failure) and
# coercion of data elements (a warning); the rest succeed.
REFUSED = {3: 0xA700, 7: 0xA700, 11: 0xA700}
WARNED = {5: 0xB000}


def write_study(folder: Path) -> list[Path]:
    """COUNT small CT slices of one study, with a nested sequence in each."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(14)
    paths = []
    for number in range(1, COUNT + 1):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.PatientName = "DIRECT-1", "DIRECT^PATH"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.InstanceNumber = "CT", number
        code = Dataset()
        code.CodeValue, code.CodeMeaning = "T-D3000", "Chest"
        ds.AnatomicRegionSequence = Sequence([code])
        ds.Rows = ds.Columns = 64
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
        path = folder / f"CT{number:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class RefusingSCP:
    """A pynetdicom storage SCP that refuses some instances and warns on one."""

    aet = "REFUSING"

    def __init__(self) -> None:
        self.port = free_port()
        self.received: dict[int, bytes] = {}
        self.lock = threading.Lock()
        ae = AE(ae_title=self.aet)
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, IMPLICIT])
        self.server: ThreadedAssociationServer = ae.start_server(
            ("127.0.0.1", self.port), block=False,
            evt_handlers=[(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event: Event) -> int:
        number = int(event.dataset.InstanceNumber)
        with self.lock:
            self.received[number] = event.request.DataSet.getvalue()
        return REFUSED.get(number, WARNED.get(number, 0x0000))

    @property
    def modality(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("direct")
    files = write_study(root / "study")
    plain = StoreSCP(root / "all", "ALLSYNTAXES", accept_all=True, bit_preserving=True)
    implicit = StoreSCP(root / "implicit", "IMPLICITONLY", accept_all=False,
                        bit_preserving=True, implicit_only=True)
    refusing = RefusingSCP()
    node = NodeProcess(data_dir=root / "node", aet="ARCHIVE", modalities=(
        plain.modality, implicit.modality, refusing.modality)).start()
    try:
        assert storescu(node, files) == []
        yield {"node": node, "files": files, "all": plain, "implicit": implicit,
               "refusing": refusing}
    finally:
        node.stop()
        for scp in (plain, implicit, refusing):
            scp.stop()


def stored(node: NodeProcess) -> dict[int, Path]:
    """Instance number -> the node's stored file."""
    out = {}
    for path in (node.data_dir / "objects").rglob("*.dcm"):
        out[int(dcmread(path, stop_before_pixels=True).InstanceNumber)] = path
    return out


def by_number(folder: Path) -> dict[int, Path]:
    return {int(dcmread(p, stop_before_pixels=True).InstanceNumber): p
            for p in received_files(folder).values()}


def study_uid(setup: dict[str, object]) -> str:
    files = setup["files"]
    assert isinstance(files, list)
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def movescu(node: NodeProcess, destination: str, study: str) -> str:
    result = dcmtk("movescu", "-d", "-S", "-aec", node.aet, "-aem", destination,
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                   *node.address)
    return result.stdout + result.stderr


def final_counts(output: str) -> dict[str, int]:
    """The sub-operation counts of movescu's last response."""
    counts = {}
    for kind in ("Completed", "Failed", "Warning"):
        found = re.findall(rf"{kind} Suboperations\s*:\s*(\d+)", output)
        counts[kind] = int(found[-1]) if found else -1
    return counts


def test_getscu_receives_the_stored_bytes(setup: dict[str, object], tmp_path: Path) -> None:
    node = setup["node"]
    assert isinstance(node, NodeProcess)
    result = dcmtk("getscu", "-S", "+B", "-aec", node.aet, "-od", str(tmp_path),
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid(setup)}",
                   *node.address)
    assert result.returncode == 0, result.stderr
    received, kept = by_number(tmp_path), stored(node)
    assert sorted(received) == list(range(1, COUNT + 1))
    for number, path in kept.items():
        assert dataset_bytes(received[number]) == dataset_bytes(path), number


def move_all(setup: dict[str, object], destination: str) -> tuple[NodeProcess, dict[int, Path]]:
    """C-MOVE the study to a storescp that takes every instance: what it received."""
    node, scp = setup["node"], setup[destination]
    assert isinstance(node, NodeProcess) and isinstance(scp, StoreSCP)
    output = movescu(node, scp.aet, study_uid(setup))
    assert final_counts(output) == {"Completed": COUNT, "Failed": 0, "Warning": 0}, output
    return node, by_number(scp.directory)


def test_move_sends_the_stored_bytes(setup: dict[str, object]) -> None:
    node, received = move_all(setup, "all")
    for number, path in stored(node).items():
        assert transfer_syntax(received[number]) == transfer_syntax(path)
        assert dataset_bytes(received[number]) == dataset_bytes(path), number


def test_move_to_an_implicit_only_peer_sends_the_stored_bytes_re_encoded(
    setup: dict[str, object]
) -> None:
    node, received = move_all(setup, "implicit")
    for number, path in stored(node).items():
        assert transfer_syntax(received[number]) == IMPLICIT
        # What pydicom and pynetdicom sent before the byte converter: the same bytes.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = bytes(encode(dcmread(path), True, True))
        assert dataset_bytes(received[number]) == reference, number
        assert explicit_to_implicit(dataset_bytes(path)) == reference
        assert np.array_equal(dcmread(received[number]).pixel_array,
                              dcmread(path).pixel_array)


def test_move_counts_what_the_peer_refuses(setup: dict[str, object]) -> None:
    node, scp = setup["node"], setup["refusing"]
    assert isinstance(node, NodeProcess) and isinstance(scp, RefusingSCP)
    output = movescu(node, scp.aet, study_uid(setup))
    assert final_counts(output) == {"Completed": COUNT - len(REFUSED) - len(WARNED),
                                    "Failed": len(REFUSED), "Warning": len(WARNED)}, output
    kept = stored(node)
    assert sorted(scp.received) == list(range(1, COUNT + 1))
    for number, data in scp.received.items():
        assert data == dataset_bytes(kept[number]), number


def pynetdicom_get(node: NodeProcess, study: str, syntax: str) -> tuple[
        list[tuple[Dataset, Dataset | None]], dict[int, tuple[str, bytes]]]:
    """C-GET the study offering only ``syntax``, refusing and warning as RefusingSCP."""
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [syntax])
    received: dict[int, tuple[str, bytes]] = {}

    def on_store(event: Event) -> int:
        number = int(event.dataset.InstanceNumber)
        received[number] = (event.context.transfer_syntax, event.request.DataSet.getvalue())
        return REFUSED.get(number, WARNED.get(number, 0x0000))

    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.aet,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    try:
        responses = [(status, identifier) for status, identifier in assoc.send_c_get(
            query, StudyRootQueryRetrieveInformationModelGet) if status]
    finally:
        assoc.release()
    return responses, received


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, IMPLICIT],
                         ids=["stored", "implicit"])
def test_get_counts_what_the_requester_refuses(setup: dict[str, object], syntax: str) -> None:
    node = setup["node"]
    assert isinstance(node, NodeProcess)
    responses, received = pynetdicom_get(node, study_uid(setup), syntax)
    final, identifier = responses[-1]
    assert final.Status == 0xB000
    assert identifier is not None
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations) == (
        COUNT - len(REFUSED) - len(WARNED), len(REFUSED), len(WARNED))
    kept = stored(node)
    assert set(identifier.FailedSOPInstanceUIDList) == {
        str(dcmread(kept[n], stop_before_pixels=True).SOPInstanceUID) for n in REFUSED}
    pending = [r.NumberOfRemainingSuboperations for r, _ in responses[:-1]]
    assert pending == list(range(COUNT - 1, -1, -1))
    for number, (got_syntax, data) in received.items():
        assert got_syntax == syntax
        expected = dataset_bytes(kept[number])
        if syntax == IMPLICIT:
            expected = explicit_to_implicit(expected) or b""
        assert data == expected, number
