"""Query and retrieve across the mesh: node A answers for a study only B and C hold.

Real node processes on loopback, DCMTK (findscu, getscu, movescu, storescp) as clients.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from replication.placement import owners
from tests.mesh_support import invite, joiner, mesh_view, peer_states, start_founder, wait_for
from tests.support import (
    NodeProcess,
    dataset_bytes,
    dcmtk,
    free_port,
    received_files,
    sop_instance_uid,
    storescu,
)


def make_study(directory: Path, count: int, study_uid: str, side: int = 128) -> list[Path]:
    """``count`` CT images of one study in two series, ``side`` x ``side`` pixels each."""
    directory.mkdir(parents=True, exist_ok=True)
    template = dcmread(get_testdata_file("CT_small.dcm"))
    series = [generate_uid(), generate_uid()]
    paths = []
    for n in range(count):
        ds = template.copy()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series[n % 2]
        ds.SeriesNumber = n % 2 + 1
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.InstanceNumber = n + 1
        ds.Rows = ds.Columns = side
        ds.PixelData = bytes([n % 251]) * (side * side * 2)
        path = directory / f"{n:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def form_mesh(make_node, a_args: tuple[str, ...] = ()) -> tuple[NodeProcess, ...]:
    a = start_founder(make_node, extra_args=("--replicas", "2", *a_args))
    token = invite(a, "--uses", "2")
    b = joiner(make_node, a, "nodeb", token)
    b.extra_args += ("--replicas", "2")
    c = joiner(make_node, a, "nodec", token)
    c.extra_args += ("--replicas", "2")
    nodes = (a, b.start(), c.start())
    wait_for(lambda: all(len(mesh_view(n)["members"]) == 3 for n in nodes), 30)
    wait_for(lambda: all(len(peer_states(n)) == 2 and set(peer_states(n).values()) == {"alive"}
                         for n in nodes), 30)
    return nodes


def study_on_b_and_c(nodes: tuple[NodeProcess, ...], tmp: Path, count: int,
                     side: int = 128) -> tuple[str, list[Path]]:
    """A study stored on B whose owners are B and C, known to A's catalog."""
    a, b, _ = nodes
    ids = [mesh_view(n)["node_id"] for n in nodes]
    study = generate_uid()
    while set(owners(study, ids, 2)) != {ids[1], ids[2]}:
        study = generate_uid()
    files = make_study(tmp / "study", count, study, side)
    assert storescu(b, files) == []

    def known() -> bool:
        try:
            holders = a.get_json(f"/api/studies/{study}")["holders"]
        except OSError:
            return False
        counts = {h["node_id"]: h["instances"] for h in holders}
        return counts.get(ids[1]) == count and counts.get(ids[2]) == count
    wait_for(known, 60)
    return study, files


def stored_by_sop(node: NodeProcess) -> dict[str, Path]:
    return {sop_instance_uid(p): p for p in (node.data_dir / "objects").rglob("*.dcm")}


def findscu(node: NodeProcess, out: Path, *keys: str) -> list:
    out.mkdir(parents=True, exist_ok=True)
    args = [arg for k in keys for arg in ("-k", k)]
    result = dcmtk("findscu", "-S", "-aec", node.aet, "-X", "-od", str(out), *args,
                   *node.address)
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def getscu(node: NodeProcess, out: Path, study: str) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    return dcmtk("getscu", "-S", "+B", "-aec", node.aet, "-od", str(out),
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                 *node.address)


def assert_bit_exact(received: Path, reference: NodeProcess, count: int) -> None:
    files = [p for p in received.iterdir() if p.is_file()]
    assert len(files) == count  # every instance once: no file written twice
    got = received_files(received)
    assert len(got) == count
    stored = stored_by_sop(reference)
    for sop, path in got.items():
        assert dataset_bytes(path) == dataset_bytes(stored[sop]), sop


def test_find_get_move_and_cache_for_a_study_held_elsewhere(make_node, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "move").mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "VIEWER", "+B", "-od",
                            str(tmp_path / "move"), str(port)], stderr=subprocess.PIPE)
    try:
        nodes = form_mesh(make_node, ("--modality", f"VIEWER@127.0.0.1:{port}"))
        a, b, _ = nodes
        study, files = study_on_b_and_c(nodes, tmp_path, 12)
        assert not set(stored_by_sop(a)) & {sop_instance_uid(p) for p in files}  # none on A

        studies = findscu(a, tmp_path / "f1", "QueryRetrieveLevel=STUDY",
                          f"StudyInstanceUID={study}", "NumberOfStudyRelatedInstances",
                          "PatientID", "ModalitiesInStudy")
        assert len(studies) == 1  # held on B and C: listed once
        assert int(studies[0].NumberOfStudyRelatedInstances) == 12
        series = findscu(a, tmp_path / "f2", "QueryRetrieveLevel=SERIES",
                         f"StudyInstanceUID={study}", "SeriesInstanceUID",
                         "NumberOfSeriesRelatedInstances")
        assert sorted(int(s.NumberOfSeriesRelatedInstances) for s in series) == [6, 6]
        images = findscu(a, tmp_path / "f3", "QueryRetrieveLevel=IMAGE",
                         f"StudyInstanceUID={study}", "SeriesInstanceUID", "SOPInstanceUID",
                         "InstanceNumber")
        assert len({str(i.SOPInstanceUID) for i in images}) == 12
        wait_for(lambda: "C-FIND for member" in b.log() + nodes[2].log(), 5)

        # C-MOVE to the storescp configured on A: fetched from the mesh.
        moved = dcmtk("movescu", "-S", "-aec", a.aet, "-aem", "VIEWER",
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                      *a.address)
        assert moved.returncode == 0, moved.stderr
        assert_bit_exact(tmp_path / "move", b, 12)
        assert a.status()["retrieve"]["fetched"] == 12
        unknown = dcmtk("movescu", "-S", "-aec", a.aet, "-aem", "NOWHERE",
                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                        *a.address)
        assert "movedestinationunknown" in (unknown.stderr + unknown.stdout).lower()
        assert "unknown destination" in a.log()
    finally:
        scp.terminate()
        scp.wait(timeout=10)

    # C-GET afterwards: from A's cache, nothing fetched again.
    result = getscu(a, tmp_path / "get", study)
    assert result.returncode == 0, result.stderr
    assert_bit_exact(tmp_path / "get", b, 12)
    stats = a.status()["retrieve"]
    assert stats["fetched"] == 12 and stats["from_cache"] >= 12

    # query_scope = local: A answers for its own holdings only. Its cached copies are
    # holdings, so ask for a study A never saw: stored on B after A restarted.
    a.stop()
    a.extra_args += ("--query-scope", "local", "--cache-bytes", "0")
    a.start()
    other, _ = study_on_b_and_c(nodes, tmp_path / "second", 2)
    assert findscu(a, tmp_path / "f4", "QueryRetrieveLevel=STUDY",
                   f"StudyInstanceUID={other}") == []
    assert findscu(nodes[2], tmp_path / "f5", "QueryRetrieveLevel=STUDY",
                   f"StudyInstanceUID={other}") != []


def test_retrieve_continues_from_another_replica_when_the_holder_dies(
    make_node, tmp_path: Path
) -> None:
    budget = 4 * 2**20
    nodes = form_mesh(make_node, ("--cache-bytes", str(budget)))
    a, _, c = nodes
    ids = {mesh_view(n)["node_id"]: n for n in nodes}
    count = 50
    study, _ = study_on_b_and_c(nodes, tmp_path, count, side=512)
    reference = stored_by_sop(c)

    out = tmp_path / "get"
    out.mkdir()
    getter = subprocess.Popen(
        ["getscu", "-to", "10", "-ta", "10", "-td", "60", "-S", "+B", "-aec", a.aet,
         "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
         *a.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    holder = None
    while time.monotonic() < deadline:
        by_holder = a.status()["retrieve"]["by_holder"]
        if sum(by_holder.values()) >= 5:
            holder = max(by_holder, key=by_holder.get)
            break
        time.sleep(0.02)
    assert holder is not None
    ids[holder].kill()
    _, err = getter.communicate(timeout=90)
    assert getter.returncode == 0, err
    files = [p for p in out.iterdir() if p.is_file()]
    delivered_before_kill = a.status()["retrieve"]["by_holder"][holder]
    assert delivered_before_kill < count  # the kill came mid-stream
    assert len(files) == count
    got = received_files(out)
    assert len(got) == count
    for sop, path in got.items():
        assert dataset_bytes(path) == dataset_bytes(reference[sop]), sop
    stats = a.status()["retrieve"]
    assert stats["fetched"] == count and stats["failed"] == 0
    # The cache kept to its budget (A owns none of this study).
    assert stats["evicted"] > 0
    held = sum(p.stat().st_size for p in (a.data_dir / "objects").rglob("*.dcm"))
    assert held <= budget + 2**20  # plus the founder's own instance


def test_retrieve_with_every_holder_gone_reports_failed_sub_operations(
    make_node, tmp_path: Path
) -> None:
    """No live replica: the C-GET ends with a failure status whose counts say that every
    instance failed (none pretended delivered), and the node keeps serving."""

    nodes = form_mesh(make_node)
    a, b, c = nodes
    study, files = study_on_b_and_c(nodes, tmp_path, 4)
    b.kill()
    c.kill()

    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", a.dicom_port, ae_title=a.aet,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    final = None
    for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
        if status and status.Status not in (0xFF00, 0xFF01):
            final = status
    assoc.release()
    assert final is not None
    assert final.Status in (0xA702, 0xB000), hex(final.Status)
    assert final.NumberOfFailedSuboperations == len(files)
    assert final.get("NumberOfCompletedSuboperations", 0) == 0
    retrieve = a.get_json("/api/status")["retrieve"]
    assert (retrieve["fetched"], retrieve["failed"]) == (0, len(files))
    assert dcmtk("echoscu", "-aec", a.aet, *a.address).returncode == 0  # still serving
