"""Shared by the benchmarks: a generated CT series, and JSON from a local node's API."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)


def write_ct_series(
    folder: Path, slices: Iterable[np.ndarray], *, patient_name: str, patient_id: str,
    accession: str,
) -> list[Path]:
    """Write each 2-D uint16 array (stored values, 12 bits, HU + 1024) as one slice of a
    new study with a realistic CT header; return the paths in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now()
    date, tod = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for i, pixels in enumerate(slices):
        rows, columns = pixels.shape
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = tod
        ds.AccessionNumber = accession
        ds.Modality = "CT"
        ds.Manufacturer = "PACSmesh benchmark"
        ds.InstitutionName = "Loopback General Hospital"
        ds.ReferringPhysicianName = "REFERRER^ROSA"
        ds.StudyDescription = "CT CHEST WITHOUT CONTRAST"
        ds.SeriesDescription = "AXIAL 1.25mm"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.PatientAge = f"{now.year - 1970:03d}Y"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = "1.25"
        ds.KVP = "120"
        ds.ProtocolName = "CHEST ROUTINE"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = i + 1
        z = 0.0 - 1.25 * i  # 0.0, not -0.0, for the first slice
        ds.ImagePositionPatient = [-250.0, -250.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = z
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.PixelSpacing = [0.9765625, 0.9765625]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelPaddingValue = 0
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        path = folder / f"CT{i + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def http_get_json(port: int, path: str, host: str = "127.0.0.1") -> Any:
    # http.client, not urllib: urllib would honour http_proxy and could leave loopback.
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        rsp = conn.getresponse()
        body = rsp.read()
    finally:
        conn.close()
    if rsp.status != 200:
        raise OSError(f"GET {path}: HTTP {rsp.status}")
    return json.loads(body)
