"""Orthanc 1.10 with Debian's orthanc-dicomweb plugin as a DICOMweb client of a node
(issue 15): Orthanc STOWs real images to the node, forgets them, then pulls the study
back from the node over WADO-RS; what returns is byte for byte what it sent."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.orthanc import ORTHANC, OrthancProcess
from tests.support import NodeProcess
from tests.test_dicomweb_qido import sample

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = pytest.mark.skipif(not (ORTHANC and PLUGIN.exists()),
                                reason="Orthanc with orthanc-dicomweb is not installed")
NATIVE = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm")  # three studies
# One study of three series, in three transfer syntaxes (native, JPEG 2000, J2K lossless).
MIXED = ("MR_small.dcm", "JPEG2000.dcm", "US1_J2KR.dcm")


@dataclass
class DicomWebOrthanc(OrthancProcess):
    node_url: str = ""

    def config(self) -> dict[str, Any]:
        return {**super().config(), "Plugins": [str(PLUGIN)],
                "DicomWeb": {"Enable": True, "Servers": {"pacsmesh": [self.node_url]}}}

    def call(self, method: str, path: str, body: bytes | dict | None = None) -> Any:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}",
                                         data=data, method=method)
        with urllib.request.urlopen(request, timeout=120) as rsp:
            raw = rsp.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[NodeProcess, DicomWebOrthanc]]:
    node = NodeProcess(data_dir=tmp_path / "node", extra_args=("--http-auth", "none")).start()
    orthanc = DicomWebOrthanc(tmp_path / "orthanc",
                              node_url=f"http://127.0.0.1:{node.http_port}/dicom-web/")
    try:
        orthanc.start()
        yield node, orthanc
    finally:
        orthanc.stop()
        node.stop()


@pytest.mark.parametrize("names", [
    NATIVE,
    pytest.param(MIXED, marks=pytest.mark.xfail(reason=(
        "Orthanc 1.10 with orthanc-dicomweb 1.7 was seen to keep only the first instance"
        " of this study's WADO-RS answer in four runs in a row, then none in six: the"
        " node sends all three (dicomweb-client reads all three); not understood yet"),
        strict=False)),
], ids=["native", "mixed-syntaxes"])
def test_orthanc_stores_to_the_node_and_retrieves_back(pair, names: tuple[str, ...]) -> None:
    node, orthanc = pair
    headers = [dcmread(sample(n), stop_before_pixels=True) for n in names]
    sent = {str(h.SOPInstanceUID): sample(n).read_bytes() for h, n in zip(headers, names,
                                                                          strict=True)}
    studies = sorted({str(h.StudyInstanceUID) for h in headers})
    ids = [orthanc.call("POST", "/instances", data)["ID"] for data in sent.values()]
    orthanc.call("POST", "/dicom-web/servers/pacsmesh/stow", {"Resources": ids})
    assert node.status()["instances"] == len(sent)
    for orthanc_id in ids:
        orthanc.call("DELETE", f"/instances/{orthanc_id}")
    assert orthanc.get_json("/instances") == []
    orthanc.call("POST", "/dicom-web/servers/pacsmesh/retrieve",
                 {"Resources": [{"Study": study} for study in studies]})
    back = {}
    for orthanc_id in orthanc.get_json("/instances"):
        tags = orthanc.get_json(f"/instances/{orthanc_id}/simplified-tags")
        back[tags["SOPInstanceUID"]] = orthanc.call("GET", f"/instances/{orthanc_id}/file")
    assert back.keys() == sent.keys()
    for uid, data in sent.items():
        assert back[uid] == data, uid
