"""Original-mode acknowledgements (HL7 v2.5 chapter 2): MSH, MSA and, for AE and AR, an
ERR segment with the location and the table-0357 code. Pure."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from node.hl7.errors import ERROR_TEXT, AckCode, Problem
from node.hl7.message import Header

_SEQUENCE = itertools.count(1)
_ACK_VERSION = "2.5"


def _escape(text: str) -> str:
    """Text safe in one field (HL7 escape sequences, default delimiters)."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    return out.replace("&", "\\T\\").replace("~", "\\R\\").replace("\r", " ").replace("\n", " ")


def build_ack(header: Header, problem: Problem | None = None,
              now: datetime | None = None) -> bytes:
    """The ACK for a message with ``header``: AA without a problem; encoded in the
    message's own character set."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%d%H%M%S")
    code = AckCode.ACCEPT if problem is None else problem.ack
    control = f"ACK{stamp}{next(_SEQUENCE):06d}"
    version = header.version if header.version.startswith("2.") else _ACK_VERSION
    msh = ["MSH", "^~\\&", _escape(header.receiving_application),
           _escape(header.receiving_facility), _escape(header.sending_application),
           _escape(header.sending_facility), stamp, "", f"ACK^{_escape(header.trigger)}^ACK",
           control, "P", _escape(version), "", "", "", "", "", _escape(header.charset)]
    segments = ["|".join(msh).rstrip("|"),
                "|".join(["MSA", code, _escape(header.control_id),
                          _escape(problem.text if problem else "")]).rstrip("|")]
    if problem is not None:
        err = ["ERR", "", problem.location,
               f"{int(problem.code)}^{ERROR_TEXT[problem.code]}^HL70357",
               "E", "", "", "", _escape(problem.text)]
        segments.append("|".join(err))
    text = "\r".join(segments) + "\r"
    return text.encode(header.codec or "ascii", "replace")
