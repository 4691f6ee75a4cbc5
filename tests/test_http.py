"""The node's JSON API against a running node that received real images over DICOM."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import warnings
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread

from node import __version__
from node.identity import NODE_ID_RE
from tests.support import NodeProcess, one_file_per_instance, storescu

# Small real samples: two instances of one study, and several syntaxes and modalities.
SAMPLE_NAMES = (
    "SC_rgb.dcm", "SC_rgb_dcmtk_ebcr_dcmd.dcm", "MR2_J2KI.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm", "emri_small.dcm", "vlut_04.dcm",
)


def samples() -> list[Path]:
    by_name = {p.name: p for p in one_file_per_instance()}
    return [by_name[name] for name in SAMPLE_NAMES]


def object_bytes(node: NodeProcess) -> int:
    return sum(p.stat().st_size for p in (node.data_dir / "objects").rglob("*") if p.is_file())


def test_status_and_studies_after_storing(node: NodeProcess) -> None:
    empty = node.status()
    assert NODE_ID_RE.match(empty.pop("node_id"))
    # Alone, a node has no peers to copy to, and has received nothing from any.
    assert empty.pop("replication") == {
        "peers": [],
        "received": {"stored": 0, "duplicate": 0, "conflict": 0, "resumed": 0, "bytes": 0},
        "owed": [], "short_of_members": 0, "unconfirmed": 0,
    }
    assert empty.pop("retrieve")["failed"] == 0  # the mesh retrieve counters (see README)
    # Nothing to alert about, unless the test machine's own disk is nearly full.
    assert [a for a in empty.pop("alerts") if a["key"] != "disk-free"] == []
    assert empty == {
        "aet": node.aet, "version": __version__, "patients": 0, "studies": 0, "series": 0,
        "instances": 0, "bytes": 0, "outbox_depth": 0, "under_replicated": 0,
    }
    assert node.get_json("/api/studies") == []

    files = samples()
    assert storescu(node, files) == []

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        headers = [dcmread(p, stop_before_pixels=True) for p in files]
    per_study = Counter(str(ds.StudyInstanceUID) for ds in headers)

    status = node.status()
    assert status["aet"] == node.aet
    assert status["version"] == __version__
    assert status["patients"] == len({str(ds.get("PatientID", "")) for ds in headers})
    assert status["studies"] == len(per_study)
    assert status["series"] == len({str(ds.SeriesInstanceUID) for ds in headers})
    assert status["instances"] == len(files)
    assert status["bytes"] == object_bytes(node) > 0
    # In no mesh, no study can be on R nodes: each counts as under-replicated (short).
    assert status["under_replicated"] == status["replication"]["short_of_members"]
    assert status["under_replicated"] == len(per_study) and status["outbox_depth"] == 0

    studies = node.get_json("/api/studies")
    assert {s["StudyInstanceUID"]: s["instances"] for s in studies} == dict(per_study)
    assert sum(s["bytes"] for s in studies) == status["bytes"]
    lestrade = next(s for s in studies if s["PatientName"] == "Lestrade^G")
    assert lestrade["instances"] == 2
    assert lestrade["StudyDate"] == "20170101"
    assert lestrade["ModalitiesInStudy"] == ["OT"]

    # Sending the same images again changes nothing.
    assert storescu(node, files[:2]) == []
    assert node.status() == status


def test_unknown_path_is_404(node: NodeProcess) -> None:
    for path in ("/nope", "/api/nope", "/api/status/extra", "/"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}{path}", timeout=5)
        assert exc.value.code == 404, path


def test_status_is_json(node: NodeProcess) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/api/status", timeout=5) as rsp:
        assert rsp.status == 200
        assert rsp.headers.get_content_type() == "application/json"
        assert json.loads(rsp.read())["aet"] == node.aet
