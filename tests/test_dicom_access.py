"""Calling-AE control with DCMTK: by default anyone may echo, store and query, while only
known AEs retrieve (0x0124 otherwise, and no association to the destination); with
``access = "strict"`` unknown AEs are rejected at association (A-ASSOCIATE-RJ). Every
refusal is in the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.support import NodeProcess, dcmtk
from tests.test_audit import audit_rows, wait_for_rows
from tests.test_dicom_roundtrip import StoreSCP

CT = Path(get_testdata_file("CT_small.dcm"))
STUDY = str(dcmread(CT, stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreSCP]:
    scp = StoreSCP(tmp_path_factory.mktemp("dest") / "in", "ACCESSDEST", accept_all=True)
    yield scp
    scp.stop()


@pytest.fixture(scope="module")
def open_node(tmp_path_factory: pytest.TempPathFactory, dest: StoreSCP) -> Iterator[NodeProcess]:
    node = NodeProcess(data_dir=tmp_path_factory.mktemp("open") / "node", aet="ARCHIVE",
                       modalities=(dest.modality,), allowed_aets=("FRIEND",)).start()
    yield node
    node.stop()


def _get(node: NodeProcess, calling: str, out: Path) -> tuple[str, list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    result = dcmtk("getscu", "-S", "-aet", calling, "-aec", node.aet, "-od", str(out),
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}",
                   *node.address)
    return result.stderr, list(out.iterdir())


def _move(node: NodeProcess, calling: str, dest: StoreSCP) -> str:
    result = dcmtk("movescu", "-S", "-aet", calling, "-aec", node.aet, "-aem", dest.aet,
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}",
                   *node.address)
    return result.stderr


def test_open_anyone_echoes_stores_and_queries(open_node: NodeProcess) -> None:
    aet = ["-aet", "STRANGER", "-aec", open_node.aet]
    assert dcmtk("echoscu", *aet, *open_node.address).returncode == 0
    stored = dcmtk("storescu", *aet, *open_node.address, str(CT))
    assert stored.returncode == 0 and "E:" not in stored.stderr, stored.stderr
    found = dcmtk("findscu", "-S", *aet, "-k", "QueryRetrieveLevel=STUDY",
                  "-k", "StudyInstanceUID", *open_node.address)
    assert found.returncode == 0 and STUDY in found.stderr + found.stdout


def test_unknown_ae_may_not_get(open_node: NodeProcess, tmp_path: Path) -> None:
    dcmtk("storescu", "-aec", open_node.aet, *open_node.address, str(CT))
    stderr, received = _get(open_node, "STRANGER", tmp_path / "stranger")
    assert received == [] and "0x124" in stderr, stderr
    stderr, received = _get(open_node, "FRIEND", tmp_path / "friend")
    assert len(received) == 1, stderr


def test_a_refused_retrieve_says_what_to_do(open_node: NodeProcess, tmp_path: Path) -> None:
    # The Error Comment (getscu -d shows it) and the node's log both name the remedy.
    result = dcmtk("getscu", "-S", "-d", "-aet", "NEWVIEWER", "-aec", open_node.aet,
                   "-od", str(tmp_path), "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={STUDY}", *open_node.address)
    assert "NEWVIEWER may not retrieve: add it to allowed_aets" in result.stderr, result.stderr
    assert "allow it with --allowed-aet NEWVIEWER" in open_node.log()


def test_unknown_ae_may_not_move(open_node: NodeProcess, dest: StoreSCP) -> None:
    dcmtk("storescu", "-aec", open_node.aet, *open_node.address, str(CT))
    before = set(dest.directory.iterdir())
    stderr = _move(open_node, "STRANGER", dest)
    assert "0x124" in stderr, stderr
    assert set(dest.directory.iterdir()) == before
    # The destination itself is in the modality table, so it may ask for a move.
    stderr = _move(open_node, dest.aet, dest)
    assert "0x124" not in stderr and len(set(dest.directory.iterdir()) - before) == 1, stderr


def test_refused_retrieves_are_audited(open_node: NodeProcess, tmp_path: Path) -> None:
    _get(open_node, "AUDITME", tmp_path / "x")
    rows = wait_for_rows(open_node, lambda r: any(x["calling_aet"] == "AUDITME" for x in r),
                         "--action", "refusal")
    mine = [r for r in rows if r["calling_aet"] == "AUDITME"]
    assert mine and mine[0]["outcome"] == "refused" and "C-GET" in mine[0]["detail"]
    assert "C-GET from AUDITME refused" in open_node.log()


def test_strict_rejects_unknown_associations(tmp_path: Path) -> None:
    node = NodeProcess(data_dir=tmp_path / "node", aet="ARCHIVE", allowed_aets=("FRIEND",),
                       extra_args=("--access", "strict")).start()
    try:
        refused = dcmtk("echoscu", "-aet", "STRANGER", "-aec", node.aet, *node.address)
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stderr, refused.stderr
        stored = dcmtk("storescu", "-aet", "STRANGER", "-aec", node.aet, *node.address, str(CT))
        assert stored.returncode != 0
        assert dcmtk("echoscu", "-aet", "FRIEND", "-aec", node.aet,
                     *node.address).returncode == 0
        assert node.status()["instances"] == 0
        rows = wait_for_rows(node, lambda r: len(r) >= 2, "--action", "refusal")
        assert {r["calling_aet"] for r in rows} == {"STRANGER"}
        assert all("rejected" in r["detail"] for r in rows)
        assert audit_rows(node, "--action", "association")[0]["calling_aet"] == "FRIEND"
        assert node.proc is not None and node.proc.poll() is None  # still serving
    finally:
        node.stop()
