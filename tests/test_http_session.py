"""Browser login (issue 15): a token exchanged once for an HttpOnly, SameSite=Strict session
cookie that reads like the token; writes made with the cookie need this node's Origin;
logout and the token's revocation end the session; sessions expire. Every request with the
cookie is an audit row, as with a bearer token."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from node import tokens
from node.http.session_store import SessionStore
from node.index import Index
from node.viewer_bundle import install, integrity_of
from tests.mesh_support import cli
from tests.test_viewer_http import stand_in
from tests.test_viewer_install import INDEX


def token(node, role: str) -> str:
    made = cli("token", "add", "--data-dir", str(node.data_dir), "--role", role,
               "--name", f"{role}-browser")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def test_login_cookie_origin_logout_and_revocation(node, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{node.http_port}"
    origin = {"Origin": base}
    viewer = stand_in(tmp_path / "viewer.tgz")
    install(node.data_dir, viewer, "test", integrity=integrity_of(viewer))
    reader, uploader, admin = token(node, "reader"), token(node, "uploader"), token(node, "admin")

    # Tokens exist: no more loopback reads; the viewer's page leads to the login page,
    # its files (no patient data) load without one.
    assert requests.get(base + "/dicom-web/studies", timeout=10).status_code == 401
    page = requests.get(base + "/viewer?StudyInstanceUIDs=1.2.3", timeout=10,
                        allow_redirects=False)
    assert page.status_code == 303
    where = urlsplit(page.headers["Location"])
    assert where.path == "/login"
    assert parse_qs(where.query) == {"next": ["/viewer?StudyInstanceUIDs=1.2.3"]}
    assert requests.get(base + "/app.bundle.0f6159c501addfe9.js", timeout=10).ok
    login = requests.get(base + page.headers["Location"], timeout=10)
    assert login.status_code == 200 and 'name="token"' in login.text
    assert 'value="/viewer?StudyInstanceUIDs=1.2.3"' in login.text

    # The form: a wrong token is told so; the right one sets the cookie and goes on.
    browser = requests.Session()
    wrong = browser.post(base + "/api/session", data={"token": "pmt_nope", "next": "/"},
                         headers=origin, timeout=10, allow_redirects=False)
    assert wrong.status_code == 401 and "Unknown or revoked token" in wrong.text
    foreign = browser.post(base + "/api/session", data={"token": reader, "next": "/"},
                           headers={"Origin": "http://evil.example"}, timeout=10,
                           allow_redirects=False)
    assert foreign.status_code == 403 and not foreign.cookies
    ok = browser.post(base + "/api/session", timeout=10, allow_redirects=False, headers=origin,
                      data={"token": reader, "next": "/viewer?StudyInstanceUIDs=1.2.3"})
    assert ok.status_code == 303 and ok.headers["Location"] == "/viewer?StudyInstanceUIDs=1.2.3"
    cookie = ok.headers["Set-Cookie"]
    assert cookie.startswith("pacsmesh_session=pms_")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"):
        assert attribute in cookie
    assert reader not in cookie  # the session is not the token
    assert browser.get(base + "/viewer?StudyInstanceUIDs=1.2.3", timeout=10).content == INDEX
    assert browser.get(base + "/dicom-web/studies", timeout=10).status_code in (200, 204)
    assert browser.get(base + "/api/audit", timeout=10).status_code == 403  # reader only
    open_redirect = browser.post(base + "/api/session", headers=origin, timeout=10,
                                 data={"token": reader, "next": "//evil.example/x"},
                                 allow_redirects=False)
    assert open_redirect.headers["Location"] == "/"

    # Scripts: a bearer token gets a session as JSON; an uploader's cookie may STOW only
    # from this node's own pages.
    scripted = requests.Session()
    answer = scripted.post(base + "/api/session", timeout=10,
                           headers={"Authorization": f"Bearer {uploader}"})
    assert answer.status_code == 200 and answer.json()["role"] == "uploader"
    stow = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'}
    refused = scripted.post(base + "/dicom-web/studies", data=b"--x--", headers=stow,
                            timeout=10)
    assert refused.status_code == 403 and "Origin" in refused.text
    cross = scripted.post(base + "/dicom-web/studies", data=b"--x--", timeout=10,
                          headers={**stow, "Origin": "http://evil.example"})
    assert cross.status_code == 403
    same = scripted.post(base + "/dicom-web/studies", data=b"--x--", timeout=10,
                         headers={**stow, **origin})
    assert same.status_code not in (401, 403)  # past the login: DICOMweb judges the body

    # Logout: needs the Origin too, ends the session on the server, clears the cookie.
    stolen = browser.cookies.get("pacsmesh_session")
    assert browser.delete(base + "/api/session", timeout=10).status_code == 403
    bye = browser.delete(base + "/api/session", headers=origin, timeout=10)
    assert bye.status_code == 204 and "Max-Age=0" in bye.headers["Set-Cookie"]
    replay = requests.get(base + "/dicom-web/studies", timeout=10,
                          cookies={"pacsmesh_session": stolen})
    assert replay.status_code == 401 and "log in again" in replay.text

    # Revoking the token ends the sessions made with it.
    assert cli("token", "revoke", "--data-dir", str(node.data_dir), uploader).returncode == 0
    assert scripted.get(base + "/dicom-web/studies", timeout=10).status_code == 401

    audit = requests.get(base + "/api/audit", headers={"Authorization": f"Bearer {admin}"},
                         timeout=10).json()
    details = [(row["user"], row["detail"]) for row in audit]
    assert ("reader-browser (reader)", "GET /dicom-web/studies: 200") in details or \
        ("reader-browser (reader)", "GET /dicom-web/studies: 204") in details
    assert any(d.endswith("session opened") and u == "reader-browser (reader)"
               for u, d in details)
    assert any("unknown or revoked token" in d for _, d in details)


async def test_a_session_expires(index: Index) -> None:
    now = [1000.0]
    store = SessionStore(index.db, clock=lambda: now[0])
    made = tokens.new_token()
    await index.add_token(made.token_id, made.digest, "reader", "")
    cookie = await store.open(made.digest, lifetime=60)
    assert await store.token_of(cookie) == made.digest
    assert await store.token_of(cookie + "x") is None
    now[0] += 61
    assert await store.token_of(cookie) is None
    # Expired rows go when the next session opens.
    await store.open(made.digest, lifetime=60)
    rows = await index.db.fetchall("SELECT COUNT(*) AS n FROM http_sessions")
    assert rows[0]["n"] == 1
    assert not await store.close(cookie)
