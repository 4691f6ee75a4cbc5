"""One row of a member's change feed, as the catalog learns it (``GET /mesh/changes``).

A change says a member stored (``add``) or dropped (``remove``) one instance, with the
keys C-FIND answers from at PATIENT, STUDY and SERIES level. The producer is this node's
index (``changes_since``): a LEFT JOIN, so the keys of an instance since gone are null.
The keys the catalog needs to place a row are required (``sha256`` may be null), the
others may be missing; every one present must have its JSON type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Self

from replication.wire_fields import (
    as_object,
    nullable_str,
    optional_int,
    optional_str,
    required_int,
    required_number,
    required_str,
)

_WHAT = "change"


@dataclass(frozen=True, slots=True)
class CatalogChange:
    seq: int
    kind: str  # "add" or "remove"; others are ignored by the catalog
    sop_uid: str
    study_uid: str
    at: float
    sha256: str | None  # null for a remove
    size: int | None = None
    rows: int | None = None
    columns: int | None = None
    source_aet: str | None = None
    sop_class_uid: str | None = None
    transfer_syntax_uid: str | None = None
    series_uid: str | None = None
    instance_number: str | None = None
    number_of_frames: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    accession_number: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    referring_physician_name: str | None = None
    modality: str | None = None
    series_number: str | None = None
    series_description: str | None = None
    series_date: str | None = None
    series_time: str | None = None
    body_part_examined: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        c = as_object(obj, _WHAT)
        return cls(
            seq=required_int(c, "seq", _WHAT),
            kind=required_str(c, "kind", _WHAT),
            sop_uid=required_str(c, "sop_uid", _WHAT),
            study_uid=required_str(c, "study_uid", _WHAT),
            at=required_number(c, "at", _WHAT),
            sha256=nullable_str(c, "sha256", _WHAT),
            size=optional_int(c, "size", _WHAT),
            rows=optional_int(c, "rows", _WHAT),
            columns=optional_int(c, "columns", _WHAT),
            source_aet=optional_str(c, "source_aet", _WHAT),
            sop_class_uid=optional_str(c, "sop_class_uid", _WHAT),
            transfer_syntax_uid=optional_str(c, "transfer_syntax_uid", _WHAT),
            series_uid=optional_str(c, "series_uid", _WHAT),
            instance_number=optional_str(c, "instance_number", _WHAT),
            number_of_frames=optional_str(c, "number_of_frames", _WHAT),
            patient_id=optional_str(c, "patient_id", _WHAT),
            patient_name=optional_str(c, "patient_name", _WHAT),
            patient_birth_date=optional_str(c, "patient_birth_date", _WHAT),
            patient_sex=optional_str(c, "patient_sex", _WHAT),
            study_date=optional_str(c, "study_date", _WHAT),
            study_time=optional_str(c, "study_time", _WHAT),
            accession_number=optional_str(c, "accession_number", _WHAT),
            study_id=optional_str(c, "study_id", _WHAT),
            study_description=optional_str(c, "study_description", _WHAT),
            referring_physician_name=optional_str(c, "referring_physician_name", _WHAT),
            modality=optional_str(c, "modality", _WHAT),
            series_number=optional_str(c, "series_number", _WHAT),
            series_description=optional_str(c, "series_description", _WHAT),
            series_date=optional_str(c, "series_date", _WHAT),
            series_time=optional_str(c, "series_time", _WHAT),
            body_part_examined=optional_str(c, "body_part_examined", _WHAT),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
