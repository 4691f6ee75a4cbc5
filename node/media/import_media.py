"""A medium into the archive, through the one ingest (Archive.ingest), so duplicates and
conflicts are what C-STORE makes of them.

With a DICOMDIR, what its directory records name is read, and nothing else; every file id
is checked first (node/media/fileids.py), so a medium that names a file outside itself or
with characters no medium may use is refused whole, before anything is stored. Names are
matched without regard to case (discs mounted without Rock Ridge show lower case).
Without a DICOMDIR, every file is tried. Blocking: run on a worker thread.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from node.archive import Archive, IngestResult, IngestStatus
from node.dicom_header import InvalidDataset
from node.dicom_validate import MissingUID, NotPart10
from node.media.dicomdir import MediaError
from node.media.fileids import BadFileId, check_file_id
from node.media.medium import Medium

log = logging.getLogger(__name__)


@dataclass
class MediaCounts:
    stored: int = 0
    duplicate: int = 0
    conflict: int = 0
    unreadable: int = 0  # named or found, but not a storable instance
    missing: list[str] = field(default_factory=list)  # named by the DICOMDIR, not there
    skipped: int = 0  # not DICOM at all (README.TXT, viewers) on media without a DICOMDIR
    tombstoned: int = 0  # of studies deleted mesh-wide: refused
    problems: list[str] = field(default_factory=list)  # one line per unreadable file

    def as_json(self) -> dict[str, Any]:
        return {"stored": self.stored, "duplicate": self.duplicate,
                "conflict": self.conflict, "unreadable": self.unreadable,
                "missing": len(self.missing), "missing_files": self.missing,
                "skipped": self.skipped, "tombstoned": self.tombstoned,
                "problems": self.problems}

    def line(self) -> str:
        return (f"stored {self.stored}, duplicate {self.duplicate}, conflict {self.conflict},"
                f" unreadable {self.unreadable}, missing {len(self.missing)}"
                + (f", skipped {self.skipped} non-DICOM" if self.skipped else "")
                + (f", refused {self.tombstoned} of deleted studies" if self.tombstoned
                   else ""))


@dataclass(frozen=True)
class ImportPlan:
    names: list[str]  # what to ingest, as named on the medium
    missing: list[str]  # file ids the DICOMDIR names that the medium lacks
    with_dicomdir: bool


def plan_import(medium: Medium) -> ImportPlan:
    """What to read from ``medium``. Raises MediaError (a DICOMDIR that cannot be read,
    or a file id that breaks the rules)."""
    by_upper = {name.upper(): name for name in medium.names()}
    dicomdir = by_upper.get("DICOMDIR")
    if dicomdir is None:
        return ImportPlan(list(by_upper.values()), [], False)
    names: list[str] = []
    missing: list[str] = []
    for file_id in _file_ids(medium, dicomdir):
        key = "/".join(file_id)
        if key in by_upper:
            names.append(by_upper[key])
        else:
            missing.append(key)
    return ImportPlan(names, missing, True)


def _file_ids(medium: Medium, dicomdir: str) -> list[tuple[str, ...]]:
    try:
        ds = dcmread(io.BytesIO(medium.read(dicomdir)))
        records = ds.DirectoryRecordSequence
    except (InvalidDicomError, AttributeError, ValueError, EOFError) as exc:
        raise MediaError(f"{medium.label}: the DICOMDIR cannot be read: {exc}") from None
    out: list[tuple[str, ...]] = []
    seen: set[tuple[str, ...]] = set()
    for record in records:
        raw = record.get("ReferencedFileID")
        if raw is None or str(record.get("DirectoryRecordType", "")).strip() in (
                "PATIENT", "STUDY", "SERIES"):
            continue
        parts = [raw] if isinstance(raw, str) else list(raw)
        try:
            file_id = check_file_id([str(p) for p in parts])
        except BadFileId as exc:
            raise MediaError(f"{medium.label}: the DICOMDIR is refused: {exc}") from None
        if file_id not in seen:
            seen.add(file_id)
            out.append(file_id)
    return out


def import_medium(archive: Archive, medium: Medium, source: str = "MEDIA",
                  progress: Callable[[int], None] | None = None,
                  on_result: Callable[[IngestResult], None] | None = None) -> MediaCounts:
    """Ingest what ``medium`` holds; ``progress`` is told the number of files first, then
    called with 0 after each. A medium refused whole raises MediaError before anything is
    stored; StorageError and IndexFailure (the archive's, not the medium's) stop it."""
    plan = plan_import(medium)
    counts = MediaCounts(missing=plan.missing)
    if progress is not None:
        progress(len(plan.names))
    for name in plan.names:
        try:
            result = archive.ingest(medium.read(name), source)
        except (NotPart10, MissingUID) as exc:
            if plan.with_dicomdir:  # the DICOMDIR said it was an instance
                counts.unreadable += 1
                counts.problems.append(f"{name}: {exc}")
            else:
                counts.skipped += 1
        except (InvalidDataset, MediaError) as exc:
            counts.unreadable += 1
            counts.problems.append(f"{name}: {exc}")
        else:
            _count(counts, result.status)
            if on_result is not None:
                on_result(result)
        if progress is not None:
            progress(0)
    return counts


def _count(counts: MediaCounts, status: IngestStatus) -> None:
    if status is IngestStatus.STORED:
        counts.stored += 1
    elif status is IngestStatus.DUPLICATE:
        counts.duplicate += 1
    elif status is IngestStatus.CONFLICT:
        counts.conflict += 1
    else:
        counts.tombstoned += 1
