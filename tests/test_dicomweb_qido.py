"""QIDO-RS (issue 15) with the real dicomweb-client against a real node process: the C-FIND
matcher answers it (single values, wildcards, UID lists, date ranges, case-insensitive
PN), JSON per PS3.18 F.2, includefield, limit/offset, and 400 with a reason for bad input."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomweb_client import DICOMwebClient
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.support import NodeProcess, storescu

NAMES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "US1_J2KR.dcm",
         "emri_small.dcm")
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def sample(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def header(name: str) -> object:
    return dcmread(sample(name), stop_before_pixels=True)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    running = NodeProcess(data_dir=tmp_path_factory.mktemp("qido") / "node").start()
    try:
        assert storescu(running, [sample(n) for n in NAMES]) == []
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> DICOMwebClient:
    return DICOMwebClient(url=f"http://127.0.0.1:{node.http_port}/dicom-web")


def value(answer: dict, tag: str) -> list:
    return answer.get(tag, {}).get("Value", [])


def studies_of(answers: list[dict]) -> set[str]:
    return {value(a, STUDY_UID)[0] for a in answers}


def test_all_studies_in_dicom_json(client: DICOMwebClient) -> None:
    found = client.search_for_studies()
    expected = {str(header(n).StudyInstanceUID) for n in NAMES}
    assert studies_of(found) == expected
    for study in found:
        assert list(study) == sorted(study), "keys are sorted 8-hex tags"
        assert all(len(k) == 8 and "vr" in v for k, v in study.items())
        for v in study.values():
            assert "Value" not in v or v["Value"], "an empty value has no Value"
        if "00080061" in study:  # ModalitiesInStudy: non-empty or absent
            assert value(study, "00080061")
        count = value(study, "00201208")  # NumberOfStudyRelatedInstances
        assert count and isinstance(count[0], int)
    ct = next(s for s in found
              if value(s, STUDY_UID)[0] == str(header("CT_small.dcm").StudyInstanceUID))
    assert ct["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "CompressedSamples^CT1"}]}
    assert value(ct, "00080061") == ["CT"]


def test_matching_as_c_find(client: DICOMwebClient) -> None:
    ct = str(header("CT_small.dcm").StudyInstanceUID)
    rle = str(header("SC_rgb_rle.dcm").StudyInstanceUID)
    assert studies_of(client.search_for_studies(search_filters={"PatientID": "1CT1"})) == {ct}
    # Case-insensitive PN with a wildcard, and the same by 8-hex tag.
    assert studies_of(client.search_for_studies(
        search_filters={"PatientName": "compressedsamples^ct*"})) == {ct}
    assert studies_of(client.search_for_studies(search_filters={"00100010": "lestrade*"})) \
        == {rle}
    # A UID list, and a date range.
    assert studies_of(client.search_for_studies(
        search_filters={"StudyInstanceUID": f"{ct},{rle}"})) == {ct, rle}
    assert studies_of(client.search_for_studies(
        search_filters={"StudyDate": "20040101-20040131"})) == {ct}
    assert client.search_for_studies(search_filters={"PatientID": "nobody"}) == []


def test_series_and_instances(client: DICOMwebClient) -> None:
    mr = header("MR_small.dcm")
    series = client.search_for_series(str(mr.StudyInstanceUID))
    assert str(mr.SeriesInstanceUID) in {value(s, SERIES_UID)[0] for s in series}
    everywhere = client.search_for_series(search_filters={"Modality": "RT"})
    assert everywhere == []
    ct_series = client.search_for_series(search_filters={"Modality": "CT"})
    assert [value(s, SERIES_UID)[0] for s in ct_series] == \
        [str(header("CT_small.dcm").SeriesInstanceUID)]
    assert value(ct_series[0], "00201209") == [1]  # NumberOfSeriesRelatedInstances
    # All series: the study's attributes too; within a study, not.
    assert value(ct_series[0], "00100020") == ["1CT1"]
    assert "00100020" not in series[0]
    instances = client.search_for_instances(str(mr.StudyInstanceUID),
                                            str(mr.SeriesInstanceUID))
    assert str(mr.SOPInstanceUID) in {value(i, SOP_UID)[0] for i in instances}
    one = client.search_for_instances(search_filters={"SOPInstanceUID": str(mr.SOPInstanceUID)})
    assert len(one) == 1
    assert value(one[0], STUDY_UID) == [str(mr.StudyInstanceUID)]
    assert value(one[0], "00280010") == [int(mr.Rows)]  # Rows, a number
    assert value(one[0], "00080060") == ["MR"]  # the series' Modality, for all instances


def test_includefield_limit_offset(client: DICOMwebClient) -> None:
    every = client.search_for_studies()
    assert len(client.search_for_studies(limit=2)) == 2
    assert client.search_for_studies(offset=1, limit=100) == every[1:]
    with_all = client.search_for_studies(fields=["all"], search_filters={"PatientID": "1CT1"})
    assert "00081030" in with_all[0] or "00200010" in with_all[0]
    assert "00201206" in with_all[0]  # NumberOfStudyRelatedSeries
    picked = client.search_for_instances(fields=["00180050", "PatientSex"],
                                         search_filters={"PatientID": "1CT1"})
    assert "00100040" in picked[0] and "00180050" in picked[0]
    fuzzy = client.search_for_studies(fuzzymatching=True, search_filters={"PatientID": "1CT1"})
    assert len(fuzzy) == 1


def get(node: NodeProcess, path: str, accept: str = "application/dicom+json") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{node.http_port}{path}",
                                     headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=10) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize(("query", "reason"), [
    ("StudyDate=2004-garbage", "StudyDate"),
    ("StudyDate=yesterday", "StudyDate"),
    ("NotAnAttribute=1", "NotAnAttribute"),
    ("FFFF0010=1", "FFFF0010"),
    ("limit=-3", "limit"),
    ("ReferencedStudySequence.StudyInstanceUID=1", "sequence"),
])
def test_bad_parameters_are_400_with_a_reason(node: NodeProcess, query: str,
                                              reason: str) -> None:
    status, body = get(node, f"/dicom-web/studies?{query}")
    assert status == 400
    assert reason in body


def test_what_is_ignored_is_told_in_a_warning(node: NodeProcess) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.http_port}/dicom-web/studies?SliceThickness=5"
        "&fuzzymatching=true&PatientID=1CT1")
    with urllib.request.urlopen(request, timeout=10) as rsp:
        warnings = rsp.headers.get_all("Warning")
        assert len(json.loads(rsp.read())) == 1
    assert len(warnings) == 2 and all(w.startswith("299 ") for w in warnings)
    assert any("SliceThickness" in w for w in warnings)
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/dicom-web/studies"
                                "?Modality=CT", timeout=10) as rsp:
        assert "Modality" in rsp.headers["Warning"]  # a series attribute at study level


def test_nothing_acceptable_is_406(node: NodeProcess) -> None:
    assert get(node, "/dicom-web/studies", accept="image/png")[0] == 406
    assert get(node, "/dicom-web/studies", accept="*/*")[0] == 200
