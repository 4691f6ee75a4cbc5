"""Choose how to send a stored instance to a peer that accepted some transfer syntaxes.

The stored bytes go out untouched whenever the peer accepted their transfer syntax.
Otherwise uncompressed encodings are converted by pynetdicom, and compressed ones are
decoded here with pydicom's pixel handlers (pylibjpeg, openjpeg, libjpeg, RLE).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

UNCOMPRESSED = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
     DeflatedExplicitVRLittleEndian}
)
# Encodings pynetdicom converts between on its own (re-encoding the data set).
_CONVERTIBLE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                          DeflatedExplicitVRLittleEndian})


class Plan(enum.Enum):
    AS_STORED = "as-stored"  # stream the file's bytes
    REENCODE = "re-encode"  # uncompressed -> another uncompressed encoding
    DECOMPRESS = "decompress"  # compressed -> explicit VR little endian
    IMPOSSIBLE = "impossible"


class TranscodeError(ValueError):
    """The instance cannot be turned into anything the peer accepted."""


def choose_plan(stored_ts: str, accepted: Iterable[str]) -> Plan:
    accepted = set(accepted)
    if stored_ts in accepted:
        return Plan.AS_STORED
    if not accepted & _CONVERTIBLE:
        return Plan.IMPOSSIBLE
    if stored_ts in _CONVERTIBLE:
        return Plan.REENCODE
    if stored_ts == ExplicitVRBigEndian:
        return Plan.REENCODE
    return Plan.DECOMPRESS


def prepare(path: Path, plan: Plan) -> str | Dataset:
    """What to hand to ``send_c_store``: the file path, or a decoded data set."""
    if plan is Plan.AS_STORED:
        return str(path)
    if plan is Plan.IMPOSSIBLE:
        raise TranscodeError("the peer accepted no transfer syntax this instance can be sent in")
    try:
        ds = dcmread(path)
        if plan is Plan.DECOMPRESS:
            ds.decompress(generate_instance_uid=False)
        elif ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian:
            _to_little_endian(ds)
    except Exception as exc:
        raise TranscodeError(f"cannot decode: {type(exc).__name__}: {exc}") from exc
    return ds


def _to_little_endian(ds: Dataset) -> None:
    """Decode every element so pynetdicom can write it little endian."""
    for elem in ds.iterall():
        _ = elem.value  # converts raw big-endian elements into values
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_original_encoding(False, True)
