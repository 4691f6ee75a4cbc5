"""The patient-identity hook of exported media.

Media carry the patient "as currently known": once patient-identity reconciliation (HL7
ADT updates and merges) exists, it coerces the patient attributes of every exported
instance here (keeping the old values in Original Attributes Sequence). Stored files are
never rewritten; only what goes onto the medium is.
"""

from __future__ import annotations

from pydicom.dataset import Dataset


def patient_as_known(ds: Dataset) -> Dataset:
    """The data set to write onto the medium for ``ds`` (read from the archive; it may be
    changed in place and returned). Identity until reconciliation fills it in; the
    export writes the stored bytes unchanged when this returns the patient attributes it
    was given."""
    return ds


# What the export compares before and after the hook to know whether it must re-encode.
PATIENT_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                    "PatientSex", "OtherPatientIDsSequence", "OriginalAttributesSequence")
