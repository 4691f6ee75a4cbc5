"""C-FIND matching (PS3.4 C.2.2.2) through the real index, and once through DCMTK findscu."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from node.dicom_header import InstanceKeys
from node.index import Index
from node.query import QueryError, parse_identifier, response_identifier
from tests.support import NodeProcess, dcmtk, one_file_per_instance, storescu

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


def instance(
    sop: str, series: str, study: str, patient_id: str, patient_name: str, **kw: Any
) -> InstanceKeys:
    return InstanceKeys(
        sop_instance_uid=sop, sop_class_uid=kw.pop("sop_class_uid", CT_IMAGE),
        study_instance_uid=study, series_instance_uid=series, transfer_syntax_uid=EXPLICIT,
        patient_id=patient_id, patient_name=patient_name, **kw,
    )


def study(
    uid: str, patient_id: str, patient_name: str, date: str, time: str, accession: str,
    series: list[tuple[str, str, int]],
) -> list[InstanceKeys]:
    """Instances of one study: ``series`` holds (series UID, modality, instance count)."""
    out = []
    for number, (series_uid, modality, count) in enumerate(series, start=1):
        for i in range(1, count + 1):
            out.append(instance(
                f"{series_uid}.{i}", series_uid, uid, patient_id, patient_name,
                study_date=date, study_time=time, accession_number=accession,
                study_description=f"study {uid}", modality=modality,
                series_number=str(number), series_description=f"{modality} series",
                instance_number=str(i), rows=512 if modality == "CT" else 256, columns=512,
            ))
    return out


# Patients P1 (two studies), P2, P3, P4 (study without date or time), P5 (GLOB metacharacters).
S1, S2, S3, S4, S5, S6 = (f"1.2.826.0.1.99.{n}" for n in range(1, 7))
DATA: list[InstanceKeys] = [
    *study(S1, "P1", "Doe^John", "20200315", "101500", "ACC1",
           [(f"{S1}.1", "CT", 2), (f"{S1}.2", "MR", 1)]),
    *study(S2, "P1", "Doe^John", "20190101", "235959.5", "ACC2", [(f"{S2}.1", "CT", 1)]),
    *study(S3, "P2", "DOE^JANE", "20201231", "0800", "ACC3", [(f"{S3}.1", "US", 3)]),
    *study(S4, "P3", "Smith^Anna", "20210601", "12", "ACC4", [(f"{S4}.1", "CR", 1)]),
    *study(S5, "P4", "O'Brien^Sean", "", "", "", [(f"{S5}.1", "MR", 1)]),
    *study(S6, "P5", "Test[1]^Bracket", "20220202", "093000", "ACC6", [(f"{S6}.1", "OT", 1)]),
]


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[Index]:
    idx = await Index.open(tmp_path / "index.sqlite")
    for n, keys in enumerate(DATA):
        await idx.add_instance(keys, f"{n:064x}", 1000 + n, "TEST")
    try:
        yield idx
    finally:
        await idx.close()


def identifier(level: str | None, **keys: Any) -> Dataset:
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


async def find(
    index: Index, level: str, model_root: str = "STUDY", **keys: Any
) -> list[dict[str, Any]]:
    return await index.find(parse_identifier(identifier(level, **keys), model_root))


async def study_uids(index: Index, **keys: Any) -> set[str]:
    keys.setdefault("StudyInstanceUID", "")
    rows = await find(index, "STUDY", **keys)
    return {r["StudyInstanceUID"] for r in rows}


# --- matching ----------------------------------------------------------------------------


async def test_universal_match_returns_everything(index: Index) -> None:
    assert await study_uids(index) == {S1, S2, S3, S4, S5, S6}
    assert await study_uids(index, PatientName="") == {S1, S2, S3, S4, S5, S6}
    assert await study_uids(index, PatientName="*") == {S1, S2, S3, S4, S5, S6}


async def test_single_value_match(index: Index) -> None:
    assert await study_uids(index, PatientID="P1") == {S1, S2}
    assert await study_uids(index, PatientID="P2") == {S3}
    assert await study_uids(index, AccessionNumber="ACC4") == {S4}
    assert await study_uids(index, StudyDate="20200315") == {S1}
    assert await study_uids(index, PatientID="nobody") == set()
    # Values other than names are matched exactly, case included.
    assert await study_uids(index, AccessionNumber="acc4") == set()
    # Several keys: all must match.
    assert await study_uids(index, PatientID="P1", StudyDate="20190101") == {S2}


async def test_patient_name_is_case_insensitive(index: Index) -> None:
    assert await study_uids(index, PatientName="doe^john") == {S1, S2}
    assert await study_uids(index, PatientName="DOE^JANE") == {S3}
    assert await study_uids(index, PatientName="Doe^Jane") == {S3}


async def test_wildcards(index: Index) -> None:
    assert await study_uids(index, PatientName="doe*") == {S1, S2, S3}
    assert await study_uids(index, PatientName="*anna") == {S4}
    assert await study_uids(index, PatientName="DOE^J?HN") == {S1, S2}
    assert await study_uids(index, PatientName="d?e^*") == {S1, S2, S3}
    assert await study_uids(index, PatientName="o'brien*") == {S5}
    assert await study_uids(index, PatientID="P?") == {S1, S2, S3, S4, S5, S6}
    assert await study_uids(index, AccessionNumber="ACC*") == {S1, S2, S3, S4, S6}
    assert await study_uids(index, StudyDescription="*S1") == set()  # case-sensitive: "s1"


async def test_brackets_are_not_wildcards(index: Index) -> None:
    assert await study_uids(index, PatientName="test[1]*") == {S6}
    assert await study_uids(index, PatientName="Test[1]^Bracket") == {S6}
    assert await study_uids(index, PatientName="test1*") == set()
    assert await study_uids(index, PatientName="test[12]*") == set()


async def test_date_ranges(index: Index) -> None:
    assert await study_uids(index, StudyDate="20200101-20201231") == {S1, S3}
    assert await study_uids(index, StudyDate="-20200101") == {S2}
    assert await study_uids(index, StudyDate="20200101-") == {S1, S3, S4, S6}
    assert await study_uids(index, StudyDate="20200315-20200315") == {S1}
    assert await study_uids(index, StudyDate="20300101-") == set()
    # A study without a date never matches a range.
    assert S5 not in await study_uids(index, StudyDate="-99991231")


async def test_time_ranges(index: Index) -> None:
    assert await study_uids(index, StudyTime="1000-1100") == {S1}
    assert await study_uids(index, StudyTime="1015-1015") == {S1}  # the whole minute
    assert await study_uids(index, StudyTime="-0900") == {S3}
    assert await study_uids(index, StudyTime="2300-") == {S2}
    assert await study_uids(index, StudyTime="090000-120000") == {S1, S4, S6}
    assert await study_uids(index, StudyTime="10:00-11:00") == {S1}  # ACR-NEMA style
    # Single values compare as times, not as text: "12" is 12:00:00.
    assert await study_uids(index, StudyTime="120000") == {S4}
    assert await study_uids(index, StudyTime="080000") == {S3}


async def test_date_and_time_together(index: Index) -> None:
    assert await study_uids(index, StudyDate="20190101-20211231", StudyTime="-1100") == {
        S1, S3,
    }


async def test_uid_lists(index: Index) -> None:
    assert await study_uids(index, StudyInstanceUID=f"{S1}\\{S3}") == {S1, S3}
    assert await study_uids(index, StudyInstanceUID=[S2, S4, "1.2.3.4.5"]) == {S2, S4}
    assert await study_uids(index, StudyInstanceUID=S5) == {S5}
    rows = await find(index, "SERIES", SeriesInstanceUID=f"{S1}.2\\{S3}.1")
    assert {r["SeriesInstanceUID"] for r in rows} == {f"{S1}.2", f"{S3}.1"}
    rows = await find(index, "IMAGE", SOPInstanceUID=f"{S1}.1.2\\{S3}.1.3\\{S3}.1.9")
    assert [r["SOPInstanceUID"] for r in rows] == [f"{S1}.1.2", f"{S3}.1.3"]


async def test_modalities_in_study_matches(index: Index) -> None:
    assert await study_uids(index, ModalitiesInStudy="US") == {S3}
    assert await study_uids(index, ModalitiesInStudy="MR") == {S1, S5}
    assert await study_uids(index, ModalitiesInStudy=["CT", "CR"]) == {S1, S2, S4}


async def test_image_level_numeric_match(index: Index) -> None:
    rows = await find(index, "IMAGE", Rows=512, SOPInstanceUID="")
    assert {r["SOPInstanceUID"] for r in rows} == {f"{S1}.1.1", f"{S1}.1.2", f"{S2}.1.1"}


# --- return keys -----------------------------------------------------------------------


async def test_study_return_keys(index: Index) -> None:
    rows = await find(
        index, "STUDY", StudyInstanceUID=S1, PatientName="", PatientID="", StudyDate="",
        AccessionNumber="", NumberOfStudyRelatedInstances="", NumberOfStudyRelatedSeries="",
        ModalitiesInStudy="",
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["PatientName"] == "Doe^John"
    assert row["PatientID"] == "P1"
    assert row["StudyDate"] == "20200315"
    assert row["AccessionNumber"] == "ACC1"
    assert row["NumberOfStudyRelatedInstances"] == 3
    assert row["NumberOfStudyRelatedSeries"] == 2
    assert row["ModalitiesInStudy"] == "CT\\MR"


async def test_study_counts_for_all_studies(index: Index) -> None:
    rows = await find(index, "STUDY", StudyInstanceUID="", NumberOfStudyRelatedInstances="")
    counts = {r["StudyInstanceUID"]: r["NumberOfStudyRelatedInstances"] for r in rows}
    assert counts == {S1: 3, S2: 1, S3: 3, S4: 1, S5: 1, S6: 1}
    # Ordered by date (an empty date first), then UID.
    assert [r["StudyInstanceUID"] for r in rows] == [S5, S2, S1, S3, S4, S6]


async def test_patient_level(index: Index) -> None:
    rows = await find(
        index, "PATIENT", "PATIENT", PatientID="", PatientName="",
        NumberOfPatientRelatedStudies="", NumberOfPatientRelatedSeries="",
        NumberOfPatientRelatedInstances="",
    )
    assert [r["PatientID"] for r in rows] == ["P1", "P2", "P3", "P4", "P5"]  # one row each
    p1 = rows[0]
    assert p1["PatientName"] == "Doe^John"
    assert p1["NumberOfPatientRelatedStudies"] == 2
    assert p1["NumberOfPatientRelatedSeries"] == 3
    assert p1["NumberOfPatientRelatedInstances"] == 4
    assert rows[1]["NumberOfPatientRelatedInstances"] == 3

    rows = await find(index, "PATIENT", "PATIENT", PatientName="doe*")
    assert [r["PatientID"] for r in rows] == ["P1", "P2"]


async def test_series_level(index: Index) -> None:
    for root in ("STUDY", "PATIENT"):
        rows = await find(
            index, "SERIES", root, StudyInstanceUID=S1, SeriesInstanceUID="", Modality="",
            SeriesNumber="", NumberOfSeriesRelatedInstances="",
        )
        assert [
            (r["SeriesInstanceUID"], r["Modality"], r["SeriesNumber"],
             r["NumberOfSeriesRelatedInstances"])
            for r in rows
        ] == [(f"{S1}.1", "CT", "1", 2), (f"{S1}.2", "MR", "2", 1)]
    rows = await find(index, "SERIES", Modality="US", NumberOfSeriesRelatedInstances="")
    assert [(r["SeriesInstanceUID"], r["NumberOfSeriesRelatedInstances"]) for r in rows] == [
        (f"{S3}.1", 3)
    ]
    # Higher-level keys match at a lower level too.
    rows = await find(index, "SERIES", PatientName="doe^john", Modality="CT")
    assert {r["SeriesInstanceUID"] for r in rows} == {f"{S1}.1", f"{S2}.1"}


async def test_image_level(index: Index) -> None:
    for root in ("STUDY", "PATIENT"):
        rows = await find(
            index, "IMAGE", root, StudyInstanceUID=S3, SeriesInstanceUID=f"{S3}.1",
            SOPInstanceUID="", InstanceNumber="", SOPClassUID="", Rows="", Columns="",
        )
        assert [r["SOPInstanceUID"] for r in rows] == [f"{S3}.1.1", f"{S3}.1.2", f"{S3}.1.3"]
        assert [r["InstanceNumber"] for r in rows] == ["1", "2", "3"]
        assert {(r["SOPClassUID"], r["Rows"], r["Columns"]) for r in rows} == {
            (CT_IMAGE, 256, 512)
        }


async def test_instance_number_orders_numerically(tmp_path: Path) -> None:
    idx = await Index.open(tmp_path / "order.sqlite")
    try:
        for n in (10, 2, 1):
            keys = instance(f"9.{n}", "9.0", "9", "P", "X", instance_number=str(n))
            await idx.add_instance(keys, f"{n:064x}", 1)
        rows = await idx.find(parse_identifier(identifier("IMAGE", InstanceNumber="")))
        assert [r["InstanceNumber"] for r in rows] == ["1", "2", "10"]
    finally:
        await idx.close()


async def test_keys_below_the_level_do_not_filter(index: Index) -> None:
    # Modality is a series attribute: at STUDY level it is answered empty, not matched.
    query = parse_identifier(identifier("STUDY", StudyInstanceUID="", Modality="CT"))
    assert len(await index.find(query)) == 6
    rsp = response_identifier(query, (await index.find(query))[0], "PACSMESH")
    assert "Modality" in rsp
    assert rsp.Modality in ("", None)
    # Counts belong to their own level.
    query = parse_identifier(identifier("SERIES", NumberOfStudyRelatedInstances=""))
    rsp = response_identifier(query, (await index.find(query))[0], "PACSMESH")
    assert rsp.NumberOfStudyRelatedInstances in ("", None)


# --- levels and models -----------------------------------------------------------------


def test_study_root_has_no_patient_level() -> None:
    with pytest.raises(QueryError, match="PATIENT"):
        parse_identifier(identifier("PATIENT", PatientID=""), "STUDY")
    assert parse_identifier(identifier("PATIENT", PatientID=""), "PATIENT").level == "PATIENT"


@pytest.mark.parametrize("level", [None, "", "FOO", "INSTANCE"])
def test_missing_or_invalid_level(level: str | None) -> None:
    with pytest.raises(QueryError, match="QueryRetrieveLevel"):
        parse_identifier(identifier(level, PatientID=""))


def test_level_is_case_and_space_tolerant() -> None:
    assert parse_identifier(identifier("study ")).level == "STUDY"


def test_bad_number_is_a_query_error() -> None:
    with pytest.raises(QueryError):
        parse_identifier(identifier("IMAGE", Rows="many"))


# --- response identifiers --------------------------------------------------------------


async def test_response_identifier(index: Index) -> None:
    request = identifier(
        "STUDY", SpecificCharacterSet="ISO_IR 100", PatientName="doe^jane",
        StudyDate="", NumberOfStudyRelatedInstances="", ModalitiesInStudy="",
        InstitutionName="", RetrieveAETitle="", InstanceAvailability="",
    )
    request.ReferencedStudySequence = []
    query = parse_identifier(request)
    rows = await index.find(query)
    assert len(rows) == 1
    rsp = response_identifier(query, rows[0], "MYNODE")
    assert rsp.QueryRetrieveLevel == "STUDY"
    assert rsp.SpecificCharacterSet == "ISO_IR 192"
    assert rsp.PatientName == "DOE^JANE"
    assert rsp.StudyDate == "20201231"
    assert int(rsp.NumberOfStudyRelatedInstances) == 3
    assert rsp.ModalitiesInStudy == "US"
    assert rsp.StudyInstanceUID == S3  # the unique key, though not asked for
    assert rsp.RetrieveAETitle == "MYNODE"
    assert rsp.InstanceAvailability == "ONLINE"
    # Keys the archive does not hold are answered, empty.
    assert "InstitutionName" in rsp
    assert rsp.InstitutionName in ("", None)
    assert rsp.ReferencedStudySequence == []
    # Nothing else is answered.
    assert {e.keyword for e in rsp} == {
        "SpecificCharacterSet", "QueryRetrieveLevel", "PatientName", "StudyDate",
        "NumberOfStudyRelatedInstances", "ModalitiesInStudy", "StudyInstanceUID",
        "InstitutionName", "RetrieveAETitle", "InstanceAvailability",
        "ReferencedStudySequence",
    }


async def test_response_identifier_for_study_without_modalities(tmp_path: Path) -> None:
    idx = await Index.open(tmp_path / "nomod.sqlite")
    try:
        await idx.add_instance(instance("8.1", "8.0", "8", "P", "X"), "a" * 64, 1)
        query = parse_identifier(identifier("STUDY", ModalitiesInStudy="", StudyDate=""))
        rsp = response_identifier(query, (await idx.find(query))[0], "AE")
        assert rsp.ModalitiesInStudy in ("", None)
        assert rsp.StudyDate in ("", None)
        assert rsp.StudyInstanceUID == "8"
    finally:
        await idx.close()


# --- end to end with DCMTK findscu -----------------------------------------------------

E2E_PATIENTS = {"CompressedSamples^MR2", "CompressedSamples^NM1", "Lestrade^G", "Citizen^Jan"}


def e2e_samples() -> dict[str, dict[str, Any]]:
    """StudyInstanceUID -> name, date and files of the samples the test stores."""
    studies: dict[str, dict[str, Any]] = {}
    for path in one_file_per_instance():
        ds = dcmread(path, stop_before_pixels=True)
        if str(ds.get("PatientName", "")) not in E2E_PATIENTS:
            continue
        entry = studies.setdefault(str(ds.StudyInstanceUID), {
            "name": str(ds.PatientName), "date": str(ds.StudyDate), "files": [],
        })
        entry["files"].append(path)
    return studies


def findscu(node: NodeProcess, out: Path, *keys: str) -> list[Dataset]:
    out.mkdir()
    args: list[str] = []
    for key in keys:
        args += ["-k", key]
    result = dcmtk("findscu", "-S", "-aec", node.aet, "-X", "-od", str(out), *args,
                   *node.address)
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_findscu_against_a_node(node: NodeProcess, tmp_path: Path) -> None:
    studies = e2e_samples()
    assert {s["name"] for s in studies.values()} == E2E_PATIENTS
    files = [p for s in studies.values() for p in s["files"]]
    assert storescu(node, files) == []

    responses = findscu(
        node, tmp_path / "names", "QueryRetrieveLevel=STUDY", "PatientName=compressedsamples*",
        "StudyInstanceUID", "NumberOfStudyRelatedInstances", "RetrieveAETitle",
    )
    expected = {uid for uid, s in studies.items() if s["name"].startswith("CompressedSamples")}
    assert len(expected) == 2
    assert {str(r.StudyInstanceUID) for r in responses} == expected
    for r in responses:
        assert str(r.PatientName).startswith("CompressedSamples^")
        assert int(r.NumberOfStudyRelatedInstances) == len(studies[r.StudyInstanceUID]["files"])
        assert r.RetrieveAETitle == node.aet

    responses = findscu(
        node, tmp_path / "dates", "QueryRetrieveLevel=STUDY", "StudyDate=20100101-20191231",
        "StudyInstanceUID",
    )
    expected = {uid for uid, s in studies.items() if "20100101" <= s["date"] <= "20191231"}
    assert {studies[uid]["name"] for uid in expected} == {"Lestrade^G", "Citizen^Jan"}
    assert {str(r.StudyInstanceUID) for r in responses} == expected
    assert {str(r.StudyDate) for r in responses} == {"20170101", "20190124"}
