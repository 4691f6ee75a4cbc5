"""Audit rows as RFC 5424 syslog lines carrying IHE ATNA (DICOM PS3.15 Annex A.5) fields.

Pure code. Each line has one structured-data element whose parameters are the PS3.15
field names (EventID, EventActionCode, EventDateTime, EventOutcomeIndicator, UserID,
AlternativeUserID, NetworkAccessPointID, ParticipantObjectID...), so a SIEM or an
Audit Record Repository can map them without parsing free text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# facility 10 (security/authorization), severity 5 (notice): PRI = 10 * 8 + 5
_PRI = 85
# RFC 5424 needs an enterprise number in a private SD-ID; 32473 is the one RFC 5612
# reserves for examples and documentation, pending our own.
SD_ID = "ATNA@32473"
APP_NAME = "pacsmesh"

# action -> (EventID code, its DCM meaning, EventActionCode) from DICOM CID 400 / PS3.15
_EVENTS: dict[str, tuple[str, str, str]] = {
    "association": ("110114", "User Authentication", "E"),
    "login": ("110114", "User Authentication", "E"),
    "join": ("110114", "User Authentication", "E"),
    "store": ("110104", "DICOM Instances Transferred", "C"),
    "retrieve": ("110104", "DICOM Instances Transferred", "R"),
    "export": ("110106", "Export", "R"),
    "query": ("110112", "Query", "E"),
    "refusal": ("110113", "Security Alert", "E"),
    "deletion": ("110105", "DICOM Study Deleted", "D"),
    "integrity": ("110113", "Security Alert", "E"),  # a stored object failed its check
    "patient-record": ("110110", "Patient Record", "U"),  # an HL7 update or merge applied
}
# PS3.15 A.5.3: 0 success, 4 minor failure, 8 serious failure, 12 major failure.
_OUTCOMES = {"success": "0", "minor-failure": "4", "refused": "4", "serious-failure": "8"}


def _escape(value: str) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' are escaped inside PARAM-VALUE.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_line(row: dict[str, Any], hostname: str) -> str:
    """One audit row (as read by :func:`node.audit.read_audit`) as an RFC 5424 line."""
    code, meaning, action_code = _EVENTS.get(row["action"], ("110100", "Application Activity",
                                                             "E"))
    when = datetime.fromtimestamp(float(row["at"]), UTC)
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    params: list[tuple[str, str]] = [
        ("EventID", f"{code}^DCM^{meaning}"),
        ("EventActionCode", action_code),
        ("EventDateTime", stamp),
        ("EventOutcomeIndicator", _OUTCOMES.get(row["outcome"], "8")),
        ("UserID", row["user"] or row["calling_aet"] or row["node_id"] or "-"),
    ]
    if row["calling_aet"]:
        params.append(("AlternativeUserID", f"AETITLES={row['calling_aet']}"))
    if row["node_id"]:
        params.append(("NodeID", row["node_id"]))
    if row["address"]:
        params.append(("NetworkAccessPointID", row["address"]))
    if row["patient_id"]:
        params.append(("ParticipantObjectID.Patient", row["patient_id"]))
    if row["study_uid"]:
        params.append(("ParticipantObjectID.Study", row["study_uid"]))
    sd = " ".join(f'{name}="{_escape(str(value))}"' for name, value in params)
    msgid = row["action"].upper()[:32] or "-"
    message = f"{row['action']} {row['outcome']}" + (f": {row['detail']}" if row["detail"] else "")
    return (f"<{_PRI}>1 {stamp} {hostname or '-'} {APP_NAME} - {msgid} "
            f"[{SD_ID} {sd}] {message}")
