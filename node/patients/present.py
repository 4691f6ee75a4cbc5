"""Presenting the current identity on what leaves the node: the one coercion applied to
every data set sent (C-GET, C-MOVE, WADO-RS metadata) of a patient some event touched.

The stored file stays as it is (its SHA-256 is its name); the copy on the way out gets
the current values, and the values it replaced in Original Attributes Sequence
(0400,0561) with reason COERCE (PS3.3 C.12.1.1.9).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydicom.dataset import Dataset

MODIFYING_SYSTEM = "PACSMESH"


@dataclass(frozen=True)
class Presentation:
    """What a stored Patient ID is presented as now."""

    patient_id: str
    issuer: str = ""  # PID-3.4 as received: namespace&universal id&type
    attributes: dict[str, str] = field(default_factory=dict)
    merged: bool = False

    def values(self) -> dict[str, str]:
        out = {"PatientID": self.patient_id, **self.attributes}
        namespace = self.issuer.split("&", 1)[0]
        if namespace:
            out["IssuerOfPatientID"] = namespace
        return out


def coerce(ds: Dataset, presentation: Presentation, now: datetime | None = None) -> bool:
    """Give ``ds`` the current identity in place; whether anything changed."""
    changes = {kw: value for kw, value in presentation.values().items()
               if str(ds.get(kw, "") or "") != value}
    if not changes:
        return False
    if any(not value.isascii() for value in changes.values()) and \
            "ISO_IR 192" not in str(ds.get("SpecificCharacterSet", "")):
        ds.decode()  # every text value read in its own charset before the charset changes
        ds.SpecificCharacterSet = "ISO_IR 192"
    replaced = Dataset()
    for keyword in changes:
        setattr(replaced, keyword, ds[keyword].value if keyword in ds else None)
    item = Dataset()
    item.ModifiedAttributesSequence = [replaced]
    item.AttributeModificationDateTime = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    item.ModifyingSystem = MODIFYING_SYSTEM
    item.ReasonForTheAttributeModification = "COERCE"
    item.SourceOfPreviousValues = ""
    history = list(ds.get("OriginalAttributesSequence") or [])
    ds.OriginalAttributesSequence = [*history, item]
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return True
