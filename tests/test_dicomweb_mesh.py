"""DICOMweb over the mesh (issue 15): node A answers QIDO-RS and WADO-RS for a study only
B and C hold, through the catalog and the fetcher C-GET uses; with every holder gone,
what A does not have is a 503 with a reason, not a cut stream."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import requests
from dicomweb_client import DICOMwebClient
from pydicom import dcmread

from tests.support import NodeProcess
from tests.test_mesh_retrieve import form_mesh, study_on_b_and_c

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


def stored_bytes(node: NodeProcess) -> dict[str, bytes]:
    """sha256 -> bytes of every object ``node`` stores."""
    return {p.name.split(".")[0]: p.read_bytes()
            for p in (node.data_dir / "objects").rglob("*") if p.is_file()}


def parts(client: DICOMwebClient, path: str) -> list[bytes]:
    response = requests.get(f"{client.base_url}{path}", headers={"Accept": DICOM_MULTIPART},
                            timeout=60)
    assert response.status_code == 200, response.text
    return [bytes(p) for p in client._decode_multipart_message(response, stream=False)]


def test_search_and_retrieve_a_study_held_elsewhere(make_node, tmp_path: Path) -> None:
    nodes = form_mesh(make_node)
    a, b, c = nodes
    study, files = study_on_b_and_c(nodes, tmp_path, 6)
    series = sorted({str(dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files})
    client = DICOMwebClient(url=f"http://127.0.0.1:{a.http_port}/dicom-web")

    [found] = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert found["00201208"]["Value"] == [6]  # NumberOfStudyRelatedInstances, from the catalog
    assert found["00080061"]["Value"] == ["CT"]
    instances = client.search_for_instances(study, series[0])
    assert len(instances) == 3
    assert all(i["00080018"]["Value"] for i in instances)

    held_on_b = stored_bytes(b)
    got = parts(client, f"/studies/{study}/series/{series[0]}")
    assert len(got) == 3
    for part in got:
        assert held_on_b[hashlib.sha256(part).hexdigest()] == part  # bit-exact, B's copy
    metadata = client.retrieve_series_metadata(study, series[0])
    assert len(metadata) == 3 and all("BulkDataURI" in m["7FE00010"] for m in metadata)

    b.stop()
    c.stop()
    # Series 0 is cached on A now and still served; series 1 has no live holder.
    assert len(parts(client, f"/studies/{study}/series/{series[0]}")) == 3
    request = urllib.request.Request(
        f"{client.base_url}/studies/{study}/series/{series[1]}",
        headers={"Accept": DICOM_MULTIPART})
    try:
        urllib.request.urlopen(request, timeout=120)
        raise AssertionError("a series without any live holder was answered")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        assert "could not be fetched" in exc.read().decode()
