"""WADO-RS (issue 15) with the real dicomweb-client against a real node process: study,
series and instance retrieve bit-exact as stored, metadata with bulk data as BulkDataURIs
(never inline pixel data), Accept negotiation per PS3.18 8.7 with 406 when nothing fits."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request

import numpy as np
import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom import dcmread

from tests.support import NodeProcess
from tests.test_dicomweb_qido import NAMES, client, header, node, sample

__all__ = ["client", "node"]  # the module-scoped fixtures, one node for this file too
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


def raw_parts(client: DICOMwebClient, path: str, accept: str = DICOM_MULTIPART) -> list[bytes]:
    """The parts of a multipart answer as bytes, split by dicomweb-client's own decoder
    (its retrieve_* methods hand back parsed data sets, not the bytes)."""
    response = requests.get(f"{client.base_url}{path}", headers={"Accept": accept},
                            timeout=30)
    assert response.status_code == 200, response.text
    return list(client._decode_multipart_message(response, stream=False))


def stored_objects(node: NodeProcess) -> set[str]:
    return {p.name.split(".")[0] for p in (node.data_dir / "objects").rglob("*") if p.is_file()}


def test_instance_retrieve_is_the_stored_file(client: DICOMwebClient, node: NodeProcess) -> None:
    ct = header("CT_small.dcm")
    path = (f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
            f"/instances/{ct.SOPInstanceUID}")
    [part] = raw_parts(client, path)
    [stored] = [p for p in (node.data_dir / "objects").rglob("*")
                if p.name.startswith(hashlib.sha256(part).hexdigest())]
    assert stored.read_bytes() == part
    ds = client.retrieve_instance(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID),
                                  str(ct.SOPInstanceUID))
    assert ds.SOPInstanceUID == ct.SOPInstanceUID


def test_study_and_series_retrieve(client: DICOMwebClient, node: NodeProcess) -> None:
    mr = header("MR_small.dcm")
    in_study = {str(header(n).SOPInstanceUID) for n in NAMES
                if header(n).StudyInstanceUID == mr.StudyInstanceUID}
    parts = raw_parts(client, f"/studies/{mr.StudyInstanceUID}",
                      accept=f'{DICOM_MULTIPART}; transfer-syntax=*')
    objects = stored_objects(node)
    assert all(hashlib.sha256(p).hexdigest() in objects for p in parts)
    assert {str(dcmread(io.BytesIO(p)).SOPInstanceUID) for p in parts} == in_study
    series = client.retrieve_series(str(mr.StudyInstanceUID), str(mr.SeriesInstanceUID))
    assert [str(d.SOPInstanceUID) for d in series] == [str(mr.SOPInstanceUID)]


def test_metadata_has_bulk_data_uris_not_pixels(client: DICOMwebClient) -> None:
    ct = header("CT_small.dcm")
    for metadata in (
        client.retrieve_study_metadata(str(ct.StudyInstanceUID)),
        client.retrieve_series_metadata(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID)),
        [client.retrieve_instance_metadata(str(ct.StudyInstanceUID),
                                           str(ct.SeriesInstanceUID), str(ct.SOPInstanceUID))],
    ):
        [one] = metadata
        pixels = one["7FE00010"]
        assert "BulkDataURI" in pixels and "InlineBinary" not in pixels
        assert pixels["BulkDataURI"].startswith(
            f"/dicom-web/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
            f"/instances/{ct.SOPInstanceUID}/bulkdata/")
        assert one["00080018"]["Value"] == [str(ct.SOPInstanceUID)]
        assert one["00280010"]["Value"] == [int(ct.Rows)]
        assert list(one) == sorted(one)


def status_of(node: NodeProcess, path: str, accept: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{node.http_port}/dicom-web{path}",
                                     headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=10) as rsp:
            rsp.read()
            return int(rsp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize(("accept", "status"), [
    (DICOM_MULTIPART, 200),
    ("multipart/related; type=application/dicom", 200),  # unquoted
    ("image/png, */*;q=0.1", 200),  # a list with a wildcard
    ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
     200),  # the syntax CT_small is stored in
    ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
     406),  # one it is not stored in: never transcoded on this path
    ("application/dicom+json", 406),
    ('multipart/related; type="image/jpeg"', 406),
])
def test_accept_negotiation(node: NodeProcess, accept: str, status: int) -> None:
    ct = header("CT_small.dcm")
    assert status_of(node, f"/studies/{ct.StudyInstanceUID}", accept) == status


def test_metadata_negotiation_and_unknown_study(node: NodeProcess) -> None:
    ct = header("CT_small.dcm")
    assert status_of(node, f"/studies/{ct.StudyInstanceUID}/metadata", "image/png") == 406
    assert status_of(node, f"/studies/{ct.StudyInstanceUID}/metadata", "*/*") == 200
    assert status_of(node, "/studies/1.2.3.4.5.6/metadata", "application/dicom+json") == 404
    assert status_of(node, "/studies/1.2.3.4.5.6", DICOM_MULTIPART) == 404


def test_bulk_data_uris_resolve(client: DICOMwebClient, node: NodeProcess) -> None:
    ct = header("CT_small.dcm")
    [one] = client.retrieve_series_metadata(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID))
    uri = one["7FE00010"]["BulkDataURI"]
    [pixels] = raw_parts(client, uri.removeprefix("/dicom-web"),
                         accept='multipart/related; type="application/octet-stream"')
    assert bytes(pixels) == dcmread(sample("CT_small.dcm")).PixelData
    assert status_of(node, uri.removeprefix("/dicom-web"), "application/dicom+json") == 406
    missing = uri.removeprefix("/dicom-web").replace("7FE00010", "00100010")
    assert status_of(node, missing, "*/*") == 404  # PatientName is no bulk data
    j2k = header("JPEG2000.dcm")
    encapsulated = (f"/studies/{j2k.StudyInstanceUID}/series/{j2k.SeriesInstanceUID}"
                    f"/instances/{j2k.SOPInstanceUID}/bulkdata/7FE00010")
    assert status_of(node, encapsulated, "*/*") == 406


def frames_of(client: DICOMwebClient, name: str, frames: str, accept: str) -> list[bytes]:
    ds = header(name)
    return [bytes(p) for p in raw_parts(
        client, f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/{frames}", accept=accept)]


def test_native_frames_equal_pydicoms_pixel_data(client: DICOMwebClient) -> None:
    ct = dcmread(sample("CT_small.dcm"))
    assert frames_of(client, "CT_small.dcm", "1",
                     'multipart/related; type="application/octet-stream"') == [ct.PixelData]
    ds = client.retrieve_instance_frames(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID),
                                         str(ct.SOPInstanceUID), [1])
    assert ds == [ct.PixelData]


def test_encapsulated_frames_cut_without_decoding(client: DICOMwebClient,
                                                  node: NodeProcess) -> None:
    from pydicom.encaps import generate_frames
    j2k = dcmread(sample("JPEG2000.dcm"))
    expected = list(generate_frames(j2k.PixelData, number_of_frames=int(j2k.get(
        "NumberOfFrames", 1) or 1)))
    got = frames_of(client, "JPEG2000.dcm", "1",
                    'multipart/related; type="application/octet-stream"; transfer-syntax=*')
    assert got == expected[:1]
    path = (f"/studies/{j2k.StudyInstanceUID}/series/{j2k.SeriesInstanceUID}"
            f"/instances/{j2k.SOPInstanceUID}/frames/1")
    # Not transcoded: a requester that wants it decoded is told so.
    assert status_of(node, path, 'multipart/related; type="application/octet-stream"') == 406
    assert status_of(node, path, 'multipart/related; type="image/jp2"; transfer-syntax=*') \
        == 200
    assert status_of(node, path.replace("frames/1", "frames/99"),
                     'multipart/related; type="image/jp2"; transfer-syntax=*') == 404
    assert status_of(node, path.replace("frames/1", "frames/x"), "*/*") == 400


def test_frames_of_a_multi_frame_image(client: DICOMwebClient) -> None:
    emri = dcmread(sample("emri_small.dcm"))
    assert int(emri.NumberOfFrames) > 4
    got = frames_of(client, "emri_small.dcm", "2,4,1",
                    'multipart/related; type="application/octet-stream"')
    assert got == [emri.pixel_array[n - 1].tobytes() for n in (2, 4, 1)]


def test_wado_uri_is_the_stored_file(node: NodeProcess) -> None:
    ds = header("US1_J2KR.dcm")
    query = (f"requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID="
             f"{ds.SeriesInstanceUID}&objectUID={ds.SOPInstanceUID}")
    base = f"http://127.0.0.1:{node.http_port}/wado?{query}"
    response = requests.get(f"{base}&contentType=application/dicom", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom"
    [stored] = [p for p in (node.data_dir / "objects").rglob("*")
                if p.name.startswith(hashlib.sha256(response.content).hexdigest())]
    assert stored.read_bytes() == response.content
    assert requests.get(base, timeout=10).status_code == 406  # image/jpeg: not rendered
    assert requests.get(f"{base}&contentType=application/dicom&transferSyntax="
                        "1.2.840.10008.1.2.1", timeout=10).status_code == 406
    no_object = requests.get(base.replace("objectUID", "other"), timeout=10)
    assert no_object.status_code == 400 and "objectUID" in no_object.text


def rendered(node: NodeProcess, name: str, what: str, accept: str) -> requests.Response:
    ds = header(name)
    return requests.get(
        f"http://127.0.0.1:{node.http_port}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
        f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/{what}",
        headers={"Accept": accept}, timeout=60)


@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm",
                                  "US1_J2KR.dcm"])
def test_rendered_with_the_images_window(node: NodeProcess, name: str) -> None:
    from PIL import Image
    ds = dcmread(sample(name))
    response = rendered(node, name, "rendered", "image/jpeg")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "JPEG" and picture.size == (int(ds.Columns), int(ds.Rows))
    assert len(np.unique(np.asarray(picture.convert("L")))) > 16  # not blank or flat
    png = rendered(node, name, "thumbnail", "image/png")
    assert png.status_code == 200
    small = Image.open(io.BytesIO(png.content))
    assert small.format == "PNG" and max(small.size) <= 128


def test_rendered_negotiation_and_frames(node: NodeProcess) -> None:
    assert rendered(node, "CT_small.dcm", "rendered", "application/dicom").status_code == 406
    assert rendered(node, "CT_small.dcm", "rendered", "*/*").headers["Content-Type"] \
        == "image/jpeg"
    assert rendered(node, "emri_small.dcm", "frames/3/rendered", "image/png").status_code \
        == 200
    assert rendered(node, "emri_small.dcm", "frames/99/rendered", "image/png").status_code \
        == 404


def test_metadata_is_gzipped_for_a_client_that_takes_it(node: NodeProcess) -> None:
    ct = header("CT_small.dcm")
    path = f"http://127.0.0.1:{node.http_port}/dicom-web/studies/{ct.StudyInstanceUID}/metadata"
    zipped = requests.get(path, headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert zipped.headers["Content-Encoding"] == "gzip"
    plain = requests.get(path, headers={"Accept-Encoding": "identity"}, timeout=10)
    assert "Content-Encoding" not in plain.headers
    assert zipped.json() == plain.json()
