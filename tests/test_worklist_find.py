"""Modality Worklist matching, pure: the keys inside the Scheduled Procedure Step
Sequence, ranges, names with wildcards, only the keys asked for, ended items hidden,
malformed identifiers refused with their status; and the MPPS listener's item updates."""

from __future__ import annotations

import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from node.mpps import COMPLETED, IN_PROGRESS, StepChange, StepLink
from node.patients.events import PatientKey
from node.patients.present import Presentation, coerce
from node.worklist.current import Item
from node.worklist.events import Status
from node.worklist.find import (
    CANNOT_UNDERSTAND,
    IDENTIFIER_MISMATCH,
    WorklistQueryError,
    find,
    parse_query,
)
from node.worklist.steps import linked_items


def item(accession: str, pid: str, name: str, station: str, modality: str, date: str,
         time: str, status: Status = Status.SCHEDULED) -> Item:
    return Item(accession, PatientKey(pid, "HOSP"), status, {
        "PatientName": name, "ScheduledStationAETitle": station, "Modality": modality,
        "ScheduledProcedureStepStartDate": date, "ScheduledProcedureStepStartTime": time,
        "ScheduledProcedureStepID": f"S-{accession}", "StudyInstanceUID": f"1.2.3.{pid}",
        "RequestedProcedureID": f"R-{accession}"})


ITEMS = [
    item("A1", "P1", "Müller^Zoë", "CT01", "CT", "20261203", "0800"),
    item("A2", "P2", "Roe^Richard", "CT02", "CT", "20261203", "131500"),
    item("A3", "P3", "Doe^Jane", "MR01", "MR", "20261204", "090000"),
    item("A4", "P4", "Doe^John", "CT01", "CT", "20261203", "0900", Status.CANCELLED),
    item("A5", "P5", "Doe^Jim", "CT01", "CT", "20261203", "1000", Status.COMPLETED),
    item("A6", "P6", "Doe^Joe", "CT01", "CT", "20261203", "1100", Status.IN_PROGRESS),
]


def query(step: dict[str, str] | None = None, **top: str) -> Dataset:
    ds = Dataset()
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    if step is not None:
        sps = Dataset()
        for keyword, value in step.items():
            setattr(sps, keyword, value)
        ds.ScheduledProcedureStepSequence = [sps]
    return ds


def accessions(identifier: Dataset, items: list[Item] = ITEMS) -> list[str]:
    return [str(ds.AccessionNumber) for ds in find(parse_query(identifier), items)]


@pytest.mark.parametrize(("step", "top", "expected"), [
    ({}, {}, ["A1", "A2", "A3", "A6"]),  # cancelled and completed hidden
    ({"ScheduledStationAETitle": "CT01"}, {}, ["A1", "A6"]),
    ({"ScheduledStationAETitle": "CT0?"}, {}, ["A1", "A2", "A6"]),
    ({"Modality": "MR"}, {}, ["A3"]),
    ({"ScheduledProcedureStepStartDate": "20261203"}, {}, ["A1", "A2", "A6"]),
    ({"ScheduledProcedureStepStartDate": "20261204-"}, {}, ["A3"]),
    ({"ScheduledProcedureStepStartDate": "-20261203"}, {}, ["A1", "A2", "A6"]),
    ({"ScheduledProcedureStepStartDate": "20261201-20261205"}, {}, ["A1", "A2", "A3", "A6"]),
    ({"ScheduledProcedureStepStartTime": "0800-12"}, {}, ["A1", "A3", "A6"]),
    ({"ScheduledProcedureStepStartTime": "080000"}, {}, ["A1"]),
    ({"ScheduledProcedureStepStartTime": "13-"}, {}, ["A2"]),
    ({"ScheduledProcedureStepStatus": "STARTED"}, {}, ["A6"]),
    ({"Modality": "CT", "ScheduledStationAETitle": "CT02"}, {}, ["A2"]),
    (None, {"PatientID": "P3"}, ["A3"]),
    (None, {"PatientName": "MULLER*"}, ["A1"]),
    (None, {"PatientName": "doe^j*"}, ["A3", "A6"]),
    (None, {"PatientName": "R?e^*"}, ["A2"]),
    (None, {"AccessionNumber": "A2"}, ["A2"]),
    ({"Modality": "US"}, {}, []),
])
def test_matching_inside_and_outside_the_step_sequence(
        step: dict[str, str] | None, top: dict[str, str], expected: list[str]) -> None:
    assert accessions(query(step, AccessionNumber="", **top)
                      if "AccessionNumber" not in top else query(step, **top)) == expected


def test_only_the_keys_asked_for_are_returned() -> None:
    [ds] = find(parse_query(query({"Modality": "MR", "ScheduledStationAETitle": "",
                                   "ScheduledProtocolCodeSequence": []},
                                  PatientName="", PatientAge="")), ITEMS)
    assert sorted(e.keyword for e in ds) == ["PatientAge", "PatientName",
                                            "ScheduledProcedureStepSequence"]
    assert ds.PatientName == "Doe^Jane" and not ds.PatientAge
    [step] = ds.ScheduledProcedureStepSequence
    assert sorted(e.keyword for e in step) == ["Modality", "ScheduledProtocolCodeSequence",
                                              "ScheduledStationAETitle"]
    assert (step.Modality, step.ScheduledStationAETitle) == ("MR", "MR01")
    # An empty sequence asks for all of it; a name outside ASCII says its charset.
    [full] = find(parse_query(query(None, ScheduledProcedureStepSequence=[],
                                    PatientName="M*")), ITEMS)
    assert full.SpecificCharacterSet == "ISO_IR 192"
    assert full.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "SCHEDULED"
    assert full.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "0800"


def test_malformed_identifiers_are_refused_with_their_status() -> None:
    two = query({"Modality": "CT"})
    two.ScheduledProcedureStepSequence.append(Dataset())
    not_sq = Dataset()
    not_sq.add(DataElement(0x00400100, "LO", "CT"))
    bad_range = query({"ScheduledProcedureStepStartDate": "tomorrow"})
    garbled = Dataset()  # an item tag's place holds a Patient ID's header
    junk = b"\x08\x00\x05\x00\x00\x00\x00\x00"
    garbled[0x00400100] = RawDataElement(Tag(0x00400100), "SQ", len(junk), junk, 0, False,
                                         True)
    for identifier, status in ((two, IDENTIFIER_MISMATCH), (not_sq, IDENTIFIER_MISMATCH),
                               (bad_range, IDENTIFIER_MISMATCH),
                               (garbled, CANNOT_UNDERSTAND)):
        with pytest.raises(WorklistQueryError) as caught:
            parse_query(identifier)
        assert caught.value.status == status


def test_items_are_presented_and_matched_with_the_current_identity() -> None:
    merged = {"P3": Presentation("P9", "HOSP", {"PatientName": "Doe-Smith^Jane"}, True)}

    def present(ds: Dataset) -> bool:
        now = merged.get(str(ds.PatientID))
        return now is not None and coerce(ds, now)

    found = find(parse_query(query(None, PatientID="P9", PatientName="")), ITEMS, present)
    assert [(str(d.PatientID), str(d.PatientName)) for d in found] == [
        ("P9", "Doe-Smith^Jane")]
    assert "OriginalAttributesSequence" not in found[0]
    assert find(parse_query(query(None, PatientID="P3")), ITEMS, present) == []


def test_mpps_links_name_items_by_accession_else_by_step() -> None:
    items = {i.accession: i for i in ITEMS}
    assert [i.accession for i in linked_items(items, StepLink("A2"))] == ["A2"]
    assert [i.accession for i in linked_items(items, StepLink("", "", "S-A3"))] == ["A3"]
    assert linked_items(items, StepLink("A2", "", "S-A3")) == []  # not the same step
    assert linked_items(items, StepLink("NOPE")) == []
    assert StepChange("1.2", IN_PROGRESS, ()).status != COMPLETED
