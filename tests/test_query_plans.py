"""C-FIND's statements read indexes, over this node's tables and over the mesh views:
``EXPLAIN QUERY PLAN`` of every level's typical query on a real index file shows no
scan of a table and no automatic index (a view materialized whole), and the exact keys
use their index. And the name key only narrows: it never loses a name PN matching finds.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from node.dicom_header import InstanceKeys
from node.index import Index
from node.query import LOCAL_TABLES, Query, Tables, parse_identifier, pn_fold, pn_match
from replication.catalog_store import MESH_TABLES, CatalogStore

NAMES = ["Smith^Ann", "SMITH^BOB", "Smithson^Eva", "Müller^Zoë", "MULLER^ANNA", "João^Silva",
         "Yamada^Tarou=山田^太郎=やまだ^たろう", "O'Brien^Ian", "", "Straße^Li",
         "\uff33\uff2d\uff29\uff34\uff28^\uff2a"]  # the last in full-width letters


def _keys(n: int, name: str) -> InstanceKeys:
    return InstanceKeys(
        sop_instance_uid=f"1.2.3.{n}.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid=f"1.2.1.{n}", series_instance_uid=f"1.2.2.{n}",
        transfer_syntax_uid="1.2.840.10008.1.2.1", patient_id=f"P{n}", patient_name=name,
        accession_number=f"A{n}", study_date=f"2020010{n % 9 + 1}", modality="CT")


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[Index]:
    index = await Index.open(tmp_path / "index.sqlite")
    index.mesh_view = CatalogStore(index.db)
    for n, name in enumerate(NAMES):
        await index.add_instance(_keys(n, name), f"{n:064x}", 100)
    # The same names held by two other members only, and a copy of a local one.
    changes = [
        {"kind": "add", "sop_uid": f"1.2.3.{n + 100}.1", "sha256": f"{n + 100:064x}",
         "study_uid": f"1.2.1.{n + 100}", "series_uid": f"1.2.2.{n + 100}",
         "patient_id": f"P{n + 100}", "patient_name": name, "accession_number": f"A{n + 100}",
         "study_date": "20200101", "modality": "MR"}
        for n, name in enumerate(NAMES)]
    for node in ("member-b", "member-c"):
        await CatalogStore(index.db).record_catalog_changes(node, changes, len(changes))
    yield index
    await index.close()


def _identifier(level: str, **match: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.PatientName = ds.PatientID = ds.StudyDate = ds.AccessionNumber = ""
    ds.StudyInstanceUID = ""
    if level == "STUDY":
        ds.ModalitiesInStudy = ds.NumberOfStudyRelatedInstances = ""
        ds.NumberOfStudyRelatedSeries = ""
    if level in ("SERIES", "IMAGE"):
        ds.SeriesInstanceUID = ds.Modality = ""
    if level == "SERIES":
        ds.NumberOfSeriesRelatedInstances = ""
    if level == "IMAGE":
        ds.SOPInstanceUID = ds.InstanceNumber = ""
    for key, value in match.items():
        setattr(ds, key, value)
    return ds


CASES = {
    "patient id": ("STUDY", {"PatientID": "P3"}, "patient"),
    "accession": ("STUDY", {"AccessionNumber": "A3"}, "accession"),
    "study uid": ("STUDY", {"StudyInstanceUID": "1.2.1.3"}, "autoindex_"),
    "name prefix": ("STUDY", {"PatientName": "SMITH*"}, "name_key"),
    "exact name": ("STUDY", {"PatientName": "muller^zoe"}, "name_key"),
    "date range": ("STUDY", {"StudyDate": "20200102-20200103"}, "date"),
    "series of a study": ("SERIES", {"StudyInstanceUID": "1.2.1.3"}, "series_study"),
    "images of a series": ("IMAGE", {"StudyInstanceUID": "1.2.1.3",
                                     "SeriesInstanceUID": "1.2.2.3"}, "instances_series"),
    "images of a study": ("IMAGE", {"StudyInstanceUID": "1.2.1.3"}, "instances_series"),
    "images of a patient": ("IMAGE", {"PatientID": "P3"}, "patient"),
}


async def _plan(index: Index, query: Query, tables: Tables) -> list[str]:
    sql, params = query.sql(tables=tables)
    rows = await index.db.fetchall("EXPLAIN QUERY PLAN " + sql, params)
    return [r["detail"] for r in rows]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scope", ["local", "mesh"])
async def test_every_level_reads_indexes_over_tables_and_mesh_views(
        index: Index, case: str, scope: str) -> None:
    level, match, expected_index = CASES[case]
    tables = MESH_TABLES if scope == "mesh" else LOCAL_TABLES
    plan = await _plan(index, parse_identifier(_identifier(level, **match)), tables)
    scanned = {m.group(1) for d in plan if (m := re.match(r"SCAN (\S+)", d))
               and not d.startswith("SCAN (subquery-")}  # a count's own rows
    # Over views, st/se/i are the views' own rows (their branches are searched).
    allowed = {"matched", "CONSTANT"}
    if scope == "mesh":
        allowed |= {"st", "se", "i"}
    assert scanned <= allowed, (scanned - allowed, plan)
    assert not [d for d in plan if "AUTOMATIC" in d], plan
    assert any(expected_index in d for d in plan if d.startswith("SEARCH")), plan
    if scope == "mesh" and level == "STUDY":
        # Both branches: this node's studies and the catalog's.
        assert any(d.startswith("SEARCH c ") for d in plan), plan


async def test_retrieve_matching_reads_indexes_over_the_mesh(index: Index) -> None:
    """What C-GET and C-MOVE match (every instance under the studies asked for)."""
    query = parse_identifier(_identifier("STUDY", StudyInstanceUID="1.2.1.103"))
    image = Query(level="IMAGE", conditions=query.conditions)
    plan = await _plan(index, image, MESH_TABLES)
    assert not [d for d in plan if re.match(r"SCAN (instances|c|catalog)\b", d)], plan
    held = await index.instances_for(query, mesh=True)
    assert [(i.sop_uid, i.local) for i in held] == [("1.2.3.103.1", False)]


@pytest.mark.parametrize("scope", ["local", "mesh"])
async def test_the_name_key_narrows_without_losing_a_match(index: Index, scope: str) -> None:
    """For each query, the studies found are exactly those whose name pn_match accepts
    (computed here in Python over every stored name)."""
    queries = ["SMITH*", "smith^ann", "Sm?th*", "*ith*", "MÜLLER*", "muller^zoe", "joão*",
               "山田*", "yamada^tarou", "やまだ^たろう", "STRASSE*", "straß*", "o'brien*",
               "\uff53\uff4d\uff49\uff54\uff48*", "Smithson^Eva", "Z*", "?MITH^ANN"]
    mesh = scope == "mesh"
    stored = {f"1.2.1.{n}": name for n, name in enumerate(NAMES)}
    if mesh:
        stored |= {f"1.2.1.{n + 100}": name for n, name in enumerate(NAMES)}
    for text in queries:
        expected = {uid for uid, name in stored.items() if pn_match(name, pn_fold(text))}
        found = await index.find(parse_identifier(_identifier("STUDY", PatientName=text)),
                                 mesh=mesh)
        assert {r["StudyInstanceUID"] for r in found} == expected, text
    assert len(await index.find(parse_identifier(
        _identifier("STUDY", PatientName="SMITH*")), mesh=mesh)) == (8 if mesh else 4)
