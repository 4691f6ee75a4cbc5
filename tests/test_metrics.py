"""GET /metrics on a real node: Prometheus text that parses, and counters that move as
real DCMTK tools and a DICOMweb client do work."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from pydicom.data import get_testdata_file

from tests.support import NodeProcess, dcmtk, getscu_instance, sop_instance_uid, storescu
from tests.test_http_tokens import add_token, call

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(node: NodeProcess) -> Samples:
    url = f"http://127.0.0.1:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as rsp:
        assert rsp.headers["Content-Type"].startswith("text/plain")
        text = rsp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_with_real_work(node: NodeProcess, tmp_path: Path) -> None:
    before = scrape(node)
    assert value(before, "pacsmesh_dimse_requests_total", service="C-STORE",
                 outcome="success") == 0
    assert value(before, "pacsmesh_stored_bytes") == 0
    assert value(before, "pacsmesh_disk_free_bytes") > 0

    ct = Path(get_testdata_file("CT_small.dcm"))
    assert storescu(node, [ct]) == []
    getscu_instance(node, tmp_path / "got", sop_instance_uid(ct))
    find = dcmtk("findscu", "-S", "-aec", node.aet, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID", *node.address)
    assert find.returncode == 0, find.stderr
    with urllib.request.urlopen(
            f"http://127.0.0.1:{node.http_port}/dicom-web/studies", timeout=10) as rsp:
        assert rsp.status == 200

    after = scrape(node)
    status = node.status()
    assert value(after, "pacsmesh_dimse_requests_total", service="C-STORE",
                 outcome="success") == 1
    assert value(after, "pacsmesh_dimse_seconds_count", service="C-STORE") == 1
    assert value(after, "pacsmesh_dimse_requests_total", service="C-FIND",
                 outcome="success") == 1
    assert value(after, "pacsmesh_dimse_requests_total", service="C-GET",
                 outcome="success") == 1
    assert value(after, "pacsmesh_dicomweb_requests_total", method="GET", status="200") >= 1
    # The gauges are the archive's own numbers, not an estimate.
    assert value(after, "pacsmesh_stored_bytes") == status["bytes"] > 0
    assert value(after, "pacsmesh_stored_instances") == status["instances"] == 1
    assert value(after, "pacsmesh_under_replicated_studies") == status["under_replicated"]
    assert value(after, "pacsmesh_quarantined_objects") == 0


def test_a_reader_token_is_needed_once_tokens_exist(node: NodeProcess) -> None:
    metrics = ("GET", "/metrics", None)
    assert call(node, metrics) == 200  # loopback, no token yet (http_auth = auto)
    reader = add_token(node, "reader")
    assert call(node, metrics) == 401
    assert call(node, metrics, reader) == 200
