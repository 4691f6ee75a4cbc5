"""Which bytes go where on a medium: the plan of an export, before any writer runs.

Planning reads every instance's header (never its pixel data), applies the patient
identity hook, and has the DICOMDIR made; each instance's bytes are produced only when a
writer asks for them, one at a time, so an export holds one instance in memory, not a
study. Blocking: run on a worker thread.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from node.index import StoredInstance
from node.media.content import StudySummary, index_html, readme
from node.media.dicomdir import MediaError, build_dicomdir
from node.media.identity import PATIENT_KEYWORDS, patient_as_known
from node.storage import Storage
from node.transcode import TranscodeError, choose_plan, prepare

# STD-GEN-CD (PS3.11 D.2): the only transfer syntax of the General Purpose CD-R profile.
GENERAL_PURPOSE_SYNTAX = ExplicitVRLittleEndian


@dataclass(frozen=True)
class MediaEntry:
    """One file of the medium: its path (``/``-separated, from the root) and how to
    produce its bytes."""

    path: str
    produce: Callable[[], bytes]


@dataclass
class MediaPlan:
    entries: list[MediaEntry]
    studies: list[StudySummary]
    instances: int
    transcoded: int  # instances whose encoding the medium changes

    def __iter__(self) -> Iterator[MediaEntry]:
        return iter(self.entries)


@dataclass(frozen=True)
class _Item:
    inst: StoredInstance
    header: Dataset
    reencode: bool  # False: the stored bytes go on the medium unchanged


def plan_media(storage: Storage, instances: list[StoredInstance], made_by: str,
               keep_syntax: bool = False, now: datetime | None = None) -> MediaPlan:
    """The medium for ``instances`` (all held here). Raises MediaError (an instance
    that cannot be listed or read) or StorageError."""
    unique = {inst.sop_uid: inst for inst in instances}  # one file per instance
    items = [_header(storage, inst, keep_syntax) for inst in unique.values()]
    dicomdir, file_ids = build_dicomdir(item.header for item in items)
    studies = _summaries(items)
    made_at = now or datetime.now(UTC)
    transcoded = sum(item.reencode for item in items)
    entries = [
        MediaEntry("DICOMDIR", lambda: dicomdir),
        MediaEntry("README.TXT", lambda: readme(studies, made_by, made_at, transcoded,
                                                keep_syntax).encode()),
        MediaEntry("INDEX.HTM", lambda: index_html(studies, made_by, made_at).encode()),
    ]
    for item in items:
        entries.append(MediaEntry("/".join(file_ids[item.inst.sop_uid]),
                                  _producer(storage, item)))
    return MediaPlan(entries, studies, len(items), transcoded)


def _header(storage: Storage, inst: StoredInstance, keep_syntax: bool) -> _Item:
    try:
        with storage.open_object(inst.sha256) as fh:
            header: Dataset = dcmread(fh, stop_before_pixels=True)
    except OSError as exc:
        raise MediaError(f"instance {inst.sop_uid} cannot be read: {exc}") from None
    except Exception as exc:  # pydicom's parse errors have no common type
        raise MediaError(f"instance {inst.sop_uid} cannot be parsed: {exc}") from None
    before = _patient(header)
    header = patient_as_known(header)
    coerced = _patient(header) != before
    target = inst.transfer_syntax_uid if keep_syntax else GENERAL_PURPOSE_SYNTAX
    header.file_meta.TransferSyntaxUID = UID(target)
    return _Item(inst, header, coerced or inst.transfer_syntax_uid != target)


def _patient(ds: Dataset) -> list[object]:
    return [copy.deepcopy(ds.get(kw)) for kw in PATIENT_KEYWORDS]


def _producer(storage: Storage, item: _Item) -> Callable[[], bytes]:
    def produce() -> bytes:
        if not item.reencode:
            return storage.read(item.inst.sha256)
        return _reencoded(storage, item)
    return produce


def _reencoded(storage: Storage, item: _Item) -> bytes:
    target = str(item.header.file_meta.TransferSyntaxUID)
    plain = storage.plain_file(item.inst.sha256)
    try:
        prepared = prepare(plain.path, choose_plan(item.inst.transfer_syntax_uid, [target]))
        ds = prepared if isinstance(prepared, Dataset) else dcmread(prepared)
    except TranscodeError as exc:
        raise MediaError(f"instance {item.inst.sop_uid} cannot be written as {target}:"
                         f" {exc}") from None
    finally:
        plain.close()
    ds = patient_as_known(ds)
    ds.file_meta.TransferSyntaxUID = UID(target)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _summaries(items: list[_Item]) -> list[StudySummary]:
    by_study: dict[str, list[Dataset]] = {}
    for item in items:
        by_study.setdefault(str(item.header.StudyInstanceUID), []).append(item.header)
    out = []
    for uid, headers in by_study.items():
        first = headers[0]
        out.append(StudySummary(
            patient_name=str(first.get("PatientName", "")), patient_id=str(
                first.get("PatientID", "")),
            study_uid=uid, study_date=str(first.get("StudyDate", "")),
            description=str(first.get("StudyDescription", "")),
            modalities=tuple(sorted({str(h.get("Modality", "")) for h in headers} - {""})),
            instances=len(headers)))
    return sorted(out, key=lambda s: (s.patient_name, s.patient_id, s.study_date))
