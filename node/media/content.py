"""What a person reads on a medium: README.TXT and INDEX.HTM (IHE PDI). Pure code.

The texts name the patients and studies on the medium; they are written only onto the
medium itself, never into logs.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class StudySummary:
    patient_name: str
    patient_id: str
    study_uid: str
    study_date: str
    description: str
    modalities: tuple[str, ...]
    instances: int


def readme(studies: list[StudySummary], made_by: str, made_at: datetime,
           transcoded: int, kept_syntax: bool) -> str:
    """README.TXT: what is on the medium, who made it and when, and how it is encoded.
    It claims nothing about viewers: none is on the medium."""
    lines = [
        "PORTABLE DICOM MEDIUM (IHE PDI)",
        "",
        f"Made by:   PACSmesh node {made_by}",
        f"Made at:   {made_at.isoformat(timespec='seconds')}",
        f"Contents:  {len(studies)} study(ies), {sum(s.instances for s in studies)}"
        " instance(s), listed in DICOMDIR and in INDEX.HTM",
        "",
    ]
    if kept_syntax:
        lines.append("Encoding:  instances are written in the transfer syntax they were stored"
                     " in (some may be compressed).")
    else:
        lines.append("Encoding:  every instance is Explicit VR Little Endian (profile"
                     " STD-GEN-CD);")
        lines.append(f"           {transcoded} compressed or differently encoded instance(s)"
                     " were decoded to it for this medium.")
    lines += ["", "Studies:"]
    for s in studies:
        lines.append(f"  {s.patient_name} ({s.patient_id})  {s.study_date}  "
                     f"{'/'.join(s.modalities)}  {s.description}  {s.instances} instance(s)")
        lines.append(f"    Study Instance UID {s.study_uid}")
    lines += ["", "The files follow DICOM PS3.10 and PS3.12; open DICOMDIR with any DICOM"
              " viewer.", ""]
    return "\r\n".join(lines)


def index_html(studies: list[StudySummary], made_by: str, made_at: datetime) -> str:
    """INDEX.HTM: the patients and studies as a table; plain HTML, no scripts."""
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(s.patient_name)}</td><td>{e(s.patient_id)}</td><td>{e(s.study_date)}"
        f"</td><td>{e('/'.join(s.modalities))}</td><td>{e(s.description)}</td>"
        f"<td>{s.instances}</td><td>{e(s.study_uid)}</td></tr>"
        for s in studies)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>DICOM medium</title></head>
<body>
<h1>DICOM medium</h1>
<p>Made by PACSmesh node {e(made_by)} at {e(made_at.isoformat(timespec='seconds'))}.
The images are listed in DICOMDIR; see README.TXT.</p>
<table border="1">
<tr><th>Patient</th><th>Patient ID</th><th>Study date</th><th>Modalities</th>
<th>Description</th><th>Instances</th><th>Study Instance UID</th></tr>
{rows}
</table>
</body></html>
"""
