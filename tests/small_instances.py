"""Many small, valid instances, fast: one template whose fixed-length UIDs are replaced
(studies of 100, one series each), and an archive filled through the real ingest path."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from node.app import close_archive, open_archive

SOP, STUDY, SERIES = ("1.2.826.0.1.3680043.9.7.1.", "1.2.826.0.1.3680043.9.7.2.",
                      "1.2.826.0.1.3680043.9.7.3.")
WIDTH = 12  # digits after each prefix: same-length UIDs keep every length field right


def _uid(prefix: str, n: int) -> bytes:
    return f"{prefix}{10**(WIDTH - 1) + n}".encode()


def template() -> bytes:
    """One small, valid Part 10 instance whose UIDs are placeholders of fixed length."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(_uid(SOP, 0).decode())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = _uid(SOP, 0).decode()
    ds.StudyInstanceUID = _uid(STUDY, 0).decode()
    ds.SeriesInstanceUID = _uid(SERIES, 0).decode()
    ds.PatientName, ds.PatientID, ds.Modality = "BENCH^STARTUP", "P000000", "CT"
    ds.StudyDate, ds.InstanceNumber = "20260101", 1
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def study_uid(n: int) -> str:
    """The Study Instance UID of instance ``n``."""
    return _uid(STUDY, n // 100).decode()


def sop_uid(n: int) -> str:
    return _uid(SOP, n).decode()


def instance(base: bytes, n: int) -> bytes:
    study = n // 100
    return (base.replace(_uid(SOP, 0), _uid(SOP, n))
            .replace(_uid(STUDY, 0), _uid(STUDY, study))
            .replace(_uid(SERIES, 0), _uid(SERIES, study)))


async def fill(data_dir: Path, count: int, senders: int = 4) -> float:
    """Ingest ``count`` instances (``senders`` at a time); return the seconds it took."""
    archive, _ = await open_archive(data_dir)
    base = template()
    start = time.perf_counter()
    todo = iter(range(count))

    def sender() -> None:
        for n in todo:  # one shared iterator: each number is taken once
            archive.ingest(instance(base, n), "BENCH")

    try:
        await asyncio.gather(*(asyncio.to_thread(sender) for _ in range(senders)))
    finally:
        await close_archive(archive)
    return time.perf_counter() - start
