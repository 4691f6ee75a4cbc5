"""The patient-identity hook of exported media.

Media carry the patient "as currently known": patient-identity reconciliation (HL7 ADT
updates and merges, node.patients) coerces the patient attributes of every exported
instance here (keeping the old values in Original Attributes Sequence). Stored files are
never rewritten; only what goes onto the medium is.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataset import Dataset

# Gives a data set its patient's current identity in place (node.index.PatientView.coerce).
Present = Callable[[Dataset], object]


def unchanged(ds: Dataset) -> bool:
    return False


def patient_as_known(ds: Dataset, present: Present = unchanged) -> Dataset:
    """The data set to write onto the medium for ``ds`` (read from the archive; it may be
    changed in place and returned): ``present`` coerces its patient attributes to the
    identity the patient events give (old values kept in Original Attributes Sequence).
    The export writes the stored bytes unchanged when the patient attributes come back
    as they were given."""
    present(ds)
    return ds


# What the export compares before and after the hook to know whether it must re-encode.
PATIENT_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                    "PatientSex", "OtherPatientIDsSequence", "OriginalAttributesSequence")
