"""Metadata answers kept ready (node/http/dicomweb/metadata_cache.py): the cached answer is
byte for byte the one built from the files, gzipped or not; a change to the series (a new
instance, one gone) is never answered from before it; invalidate() drops what the files
do not say; memory stays within its byte budget."""

from __future__ import annotations

import gzip
import http.client
import json
import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.uid import generate_uid

from node.http.dicomweb.dicom_json import Memo, metadata_json
from node.http.dicomweb.metadata_cache import (
    MetadataCache,
    answer,
    fingerprint,
    invalidate,
    join,
)
from tests.support import NodeProcess, one_file_per_instance, storescu
from tests.test_dicomweb_qido import node, sample

__all__ = ["node"]  # the module-scoped fixture: one node for this file too


def test_join_is_json_dumps_of_the_list() -> None:
    items = [{"00080018": {"vr": "UI", "Value": ["1.2"]}}, {"x": [1, 2.5, None, "é"]}]
    assert join(json.dumps(i).encode() for i in items) == json.dumps(items).encode()
    assert gzip.decompress(answer(b"f", [json.dumps(i).encode() for i in items]).gzipped) \
        == json.dumps(items).encode()


def test_an_answer_from_other_instances_misses() -> None:
    cache = MetadataCache()
    key = ("1.2", "1.2.3", "")
    cache.put_answer(key, answer(fingerprint(["a", "b"]), [b"{}", b"{}"]))
    assert cache.answer(key, fingerprint(["a", "b"])) is not None
    assert cache.answer(key, fingerprint(["a", "b", "c"])) is None  # an instance came
    assert cache.answer(key, fingerprint(["a"])) is None  # deleted, tombstoned, set aside
    assert cache.answer(key, fingerprint(["b", "a"])) is None  # another order, other bytes


def test_invalidate_drops_a_series_or_a_study_in_every_cache() -> None:
    caches = [MetadataCache(), MetadataCache()]
    stamp = fingerprint(["a"])
    for cache in caches:
        for key in [("S", "", ""), ("S", "X", ""), ("S", "Y", ""), ("S", "X", "I"),
                    ("T", "Z", "")]:
            cache.put_answer(key, answer(stamp, [b"{}"]))
        cache.put_instance("a", "S", b"{}")
        cache.put_instance("b", "T", b"{}")
    invalidate("S", "X")
    for cache in caches:
        assert cache.answer(("S", "Y", ""), stamp) is not None
        assert cache.answer(("T", "Z", ""), stamp) is not None
        # The study's own answer holds the series too.
        assert all(cache.answer(k, stamp) is None
                   for k in [("S", "", ""), ("S", "X", ""), ("S", "X", "I")])
        assert cache.instance("a") is None and cache.instance("b") == b"{}"
    invalidate("S")
    assert all(c.answer(("S", "Y", ""), stamp) is None for c in caches)
    assert all(c.used == c.answer(("T", "Z", ""), stamp).size + 2 for c in caches)


def test_the_byte_budget_holds_least_recently_used_out_first() -> None:
    cache = MetadataCache(budget=10_000)
    for n in range(20):
        cache.put_instance(f"sha{n}", "S", bytes(1000))
        cache.instance("sha0")  # kept in use
    assert cache.used <= 10_000
    assert cache.instance("sha0") is not None and cache.instance("sha1") is None
    cache.put_answer(("S", "X", ""), answer(b"f", [bytes(6000)]))  # over half: not kept
    assert cache.answer(("S", "X", ""), b"f") is None and cache.used <= 10_000
    assert cache.used == sum(1000 for n in range(20) if cache.instance(f"sha{n}"))


# --- against a real node ---------------------------------------------------------------


def raw_get(node: NodeProcess, path: str, encoding: str) -> tuple[bytes, str]:
    """The body as sent (not decoded) and its Content-Encoding."""
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=30)
    try:
        conn.request("GET", path, headers={"Accept": "application/dicom+json",
                                           "Accept-Encoding": encoding})
        rsp = conn.getresponse()
        body = rsp.read()
        assert rsp.status == 200, body
        return body, rsp.headers.get("Content-Encoding", "")
    finally:
        conn.close()


def from_the_files(files: list[Path]) -> bytes:
    """The metadata answer as the node built it before any cache, from the files."""
    out = []
    for path in files:
        ds = dcmread(path)
        base = (f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}")
        one = metadata_json(ds, base)
        one["00020010"] = {"vr": "UI", "Value": [str(ds.file_meta.TransferSyntaxUID)]}
        out.append(dict(sorted(one.items())))
    return json.dumps(out).encode()


def paths_of(ds: object) -> list[str]:
    study = f"/dicom-web/studies/{ds.StudyInstanceUID}"  # type: ignore[attr-defined]
    series = f"{study}/series/{ds.SeriesInstanceUID}"  # type: ignore[attr-defined]
    return [f"{study}/metadata", f"{series}/metadata",
            f"{series}/instances/{ds.SOPInstanceUID}/metadata"]  # type: ignore[attr-defined]


def in_answer_order(body: bytes, node: NodeProcess) -> bytes:
    """What the stored objects (as storescu sent them: not the sample files, whose
    trailing padding DCMTK drops) build for ``body``, in the order ``body`` lists the
    instances (the index's)."""
    by_uid = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): f
              for f in (node.data_dir / "objects").rglob("*") if f.is_file()}
    return from_the_files([by_uid[a["00080018"]["Value"][0]] for a in json.loads(body)])


@pytest.mark.parametrize("name", ["CT_small.dcm", "emri_small.dcm", "JPEG2000.dcm"])
def test_cached_answers_are_the_built_ones_byte_for_byte(node: NodeProcess,
                                                         name: str) -> None:
    for path in paths_of(dcmread(sample(name), stop_before_pixels=True)):
        first, _ = raw_get(node, path, "identity")  # built now, or from the study's build
        again, _ = raw_get(node, path, "identity")  # from the cache
        zipped, coding = raw_get(node, path, "gzip, deflate")
        assert first == again == in_answer_order(first, node)
        assert coding == "gzip" and gzip.decompress(zipped) == first


def test_a_new_instance_in_the_series_is_in_the_next_answer(node: NodeProcess,
                                                            tmp_path: Path) -> None:
    ds = dcmread(sample("CT_small.dcm"))
    first_uid = str(ds.SOPInstanceUID)
    series = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    before, _ = raw_get(node, f"{series}/metadata", "gzip")
    assert len(json.loads(gzip.decompress(before))) == 1
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 2
    added = tmp_path / "second.dcm"
    ds.save_as(added, enforce_file_format=True)
    assert storescu(node, [added]) == []
    after = gzip.decompress(raw_get(node, f"{series}/metadata", "gzip")[0])
    assert sorted(a["00080018"]["Value"][0] for a in json.loads(after)) == sorted(
        [first_uid, str(ds.SOPInstanceUID)])
    assert after == in_answer_order(after, node)
    study, _ = raw_get(node, f"/dicom-web/studies/{ds.StudyInstanceUID}/metadata",
                       "identity")
    assert str(ds.SOPInstanceUID) in {a["00080018"]["Value"][0] for a in json.loads(study)}
    assert study == in_answer_order(study, node)


def test_keep_alive_serves_many_answers_on_one_connection(node: NodeProcess) -> None:
    ct = dcmread(sample("CT_small.dcm"), stop_before_pixels=True)
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=30)
    try:
        ends = set()
        for path in paths_of(ct) * 3:
            conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
            rsp = conn.getresponse()
            rsp.read()
            assert rsp.status == 200 and rsp.headers.get("Connection") != "close"
            assert conn.sock is not None  # not closed after the answer
            ends.add(conn.sock.getsockname())
        assert len(ends) == 1
    finally:
        conn.close()


def test_one_memo_across_files_changes_no_byte() -> None:
    """Every real image of pydicom-data and every character-set sample, each built with
    one memo shared by all (different character sets, byte orders, VRs side by side),
    and a 40-instance series from CT_small: the same bytes as without a memo."""
    blobs = [p.read_bytes() for p in [*one_file_per_instance(dcmtk_only=False),
                                      *(Path(c) for c in get_charset_files("*.dcm"))]]
    ct = dcmread(sample("CT_small.dcm"))
    for n in range(40):
        ct.SOPInstanceUID, ct.InstanceNumber = generate_uid(), n + 1
        buf = BytesIO()
        ct.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    memo: Memo = {}
    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n, blob in enumerate(blobs):
            try:
                plain = json.dumps(metadata_json(dcmread(BytesIO(blob)), f"/x/{n}"))
            except Exception:  # pydicom cannot encode it at all: nothing to compare
                continue
            assert json.dumps(metadata_json(dcmread(BytesIO(blob)), f"/x/{n}", memo)) \
                == plain
            compared += 1
    assert compared > 60 and memo
