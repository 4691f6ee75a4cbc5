"""Who may see what of the dashboard on a real node: loopback reads until tokens exist,
then a token; the audit section only for admins; patient data escaped in the HTML."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.support import NodeProcess, storescu
from tests.test_http_tokens import add_token

EVIL = '<img src="x" onerror="alert(1)">'


def fetch(node: NodeProcess, path: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{node.http_port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as rsp:
            return int(rsp.status), rsp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_roles_and_escaping(node: NodeProcess, tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID = EVIL  # a LO: '=' and quotes are allowed here, unlike in a PN
    ds.StudyDescription = "</td><script>alert(2)</script>"
    ds.save_as(tmp_path / "evil.dcm", enforce_file_format=True)
    assert storescu(node, [tmp_path / "evil.dcm"]) == []

    status, html = fetch(node, "/dashboard")
    assert status == 200  # loopback, no token exists yet
    assert "<script>alert" not in html and "<img src=\"x\"" not in html
    assert "&lt;img src=&#34;x&#34; onerror=&#34;alert(1)&#34;&gt;" in html
    assert "&lt;/td&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert 'href="#audit"' not in html  # loopback is a reader

    reader, admin = add_token(node, "reader"), add_token(node, "admin")
    assert fetch(node, "/dashboard")[0] == 401  # tokens exist: loopback no longer reads
    # A browser (it asks for HTML) is sent to the login page, and back here after it.
    browser = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    browser.request("GET", "/dashboard", headers={"Accept": "text/html,*/*;q=0.8"})
    answer = browser.getresponse()
    assert answer.status == 303
    assert answer.getheader("Location") in ("/login?next=%2Fdashboard", "/login?next=/dashboard")
    browser.close()
    assert fetch(node, "/dashboard", reader)[0] == 200
    assert fetch(node, "/dashboard/part/mesh", reader)[0] == 200
    status, live = fetch(node, "/dashboard/live", reader)
    assert status == 200 and sorted(json.loads(live)) == ["alerts", "mesh", "replication"]
    assert fetch(node, "/dashboard/audit", reader)[0] == 403
    assert fetch(node, "/dashboard/static/dashboard.js", reader)[0] == 200
    assert fetch(node, "/dashboard/static/../../app.py", reader)[0] == 404

    status, page = fetch(node, "/dashboard", admin)
    assert status == 200 and 'href="#audit"' in page
    status, audit = fetch(node, "/dashboard/audit?action=store", admin)
    assert status == 200
    assert "HTTP upload" not in audit and "<td>store</td>" in audit
    assert "&lt;img" in audit  # the patient ID of the store, escaped
    status, refused = fetch(node, "/dashboard/audit?outcome=refused", admin)
    assert "the admin role is needed" in refused  # the reader's attempt above
