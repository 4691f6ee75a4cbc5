"""The dashboard in a real browser against three real nodes on loopback: it loads with no
console errors, shows a SIGKILLed member dead without a reload, shows copies owed rise and
fall to zero (and zero only once the owners really hold the study), raises an alert when
the quota is crossed, and shows a hostile patient name as text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from replication.placement import owners
from tests.browser import browser, screenshot  # noqa: F401  (the fixture)
from tests.mesh_support import cli, invite, joiner, peer_states, wait_for
from tests.support import NodeProcess, storescu

CT = Path(get_testdata_file("CT_small.dcm"))
EVIL = "<script>alert(1)</script>Evil^Name"
WAIT_MS = 40_000  # generous: the machine is shared; liveness alone takes ~6 s


def node_id(node: NodeProcess) -> str:
    return str(node.get_json("/api/mesh")["node_id"])


def hostile_study(tmp: Path, must_own: str, members: list[str]) -> tuple[Path, str]:
    """CT_small as a new study of a patient named like an XSS attack, placed (rendezvous)
    so that ``must_own`` is one of its owners."""
    ds = pydicom.dcmread(CT)
    while True:
        uid = generate_uid()
        if must_own in owners(uid, members):
            break
    ds.StudyInstanceUID = uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName = EVIL
    ds.PatientID = "XSS1"
    path = tmp / "evil.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, uid


def holds(node: NodeProcess, study_uid: str) -> bool:
    return any(s["StudyInstanceUID"] == study_uid for s in node.get_json("/api/studies"))


def test_dashboard_follows_the_mesh(make_node, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    a: NodeProcess = make_node("a", aet="NODEA")
    a.data_dir.mkdir(parents=True)
    # CT_small is 39 206 bytes: one is 49% of this quota, two are 98%.
    (a.data_dir / "pacsmesh.toml").write_text("disk_quota = 80000\ndisk_free_min = 0\n")
    assert cli("mesh", "init", "--data-dir", str(a.data_dir), "--aet", "NODEA").returncode == 0
    a.start()
    assert storescu(a, [CT]) == []
    b = joiner(make_node, a, "b", invite(a)).start()
    c = joiner(make_node, a, "c", invite(a)).start()
    wait_for(lambda: peer_states(a) == {"B": "alive", "C": "alive"}, timeout=60)
    wait_for(lambda: a.status()["outbox_depth"] == 0 and a.status()["under_replicated"] == 0,
             timeout=60)

    page = browser.new_page(viewport={"width": 1024, "height": 768})  # a tablet
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400
            else None)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"http://127.0.0.1:{a.http_port}/dashboard")
    state_c = page.locator('tr.member[data-aet="C"] .state')
    assert state_c.inner_text() == "alive"
    assert page.locator("#alert-count").inner_text() == "0"
    # What B reports of itself, through the mesh API: its version and its clock's offset.
    page.wait_for_function(
        "() => /^[+-]\\d+\\.\\d s$/.test(document.querySelector("
        "'tr.member[data-aet=\"B\"] td.offset')?.textContent.trim())", timeout=WAIT_MS)
    screenshot(page, "dashboard-mesh-alive")

    c.kill()
    page.wait_for_function(
        "() => document.querySelector('tr.member[data-aet=\"C\"] .state')"
        "?.dataset.state === 'dead'", timeout=WAIT_MS)
    assert page.locator('line.link.dead').count() == 1  # the picture too
    screenshot(page, "dashboard-member-dead")

    members = [node_id(a), node_id(b), c_id := _id_from_roster(a, "C")]
    evil, uid = hostile_study(tmp_path, c_id, members)
    assert storescu(a, [evil]) == []
    page.wait_for_function(
        "() => Number(document.getElementById('copies-owed')?.textContent) > 0",
        timeout=WAIT_MS)
    page.locator('li.alert[data-key="disk-quota"]').wait_for(timeout=WAIT_MS)
    assert "of its quota" in page.locator('li.alert[data-key="disk-quota"]').inner_text()
    screenshot(page, "dashboard-owed-and-quota-alert")

    c.start()
    page.wait_for_function(
        "() => document.getElementById('copies-owed')?.textContent === '0'"
        " && document.getElementById('under-replicated')?.textContent === '0'",
        timeout=WAIT_MS * 2)
    # Zero owed on the page only once every owner really holds the study.
    placed = {node_id(n): n for n in (a, b, c)}
    assert all(holds(placed[o], uid) for o in owners(uid, members))
    assert state_c.inner_text() == "alive"
    screenshot(page, "dashboard-replicated")

    page.fill('#study-search input[name="patient"]', "Evil")
    page.click('#study-search button')
    # The page first lists every study: wait for the answer to this search to replace them.
    page.wait_for_function(
        "() => { const c = document.querySelectorAll('#study-results td.patient');"
        " return c.length === 1 && c[0].textContent.endsWith('Evil^Name'); }",
        timeout=WAIT_MS)
    assert page.locator("#study-results td.patient").inner_text() == EVIL
    page.goto(f"http://127.0.0.1:{a.http_port}/dashboard?patient=Evil")  # server-rendered
    assert page.locator("#study-results td.patient").inner_text() == EVIL
    assert page.locator(f'a[href="/viewer?StudyInstanceUIDs={uid}"]').count() == 1
    screenshot(page, "dashboard-studies")
    assert dialogs == []
    assert errors == []


def _id_from_roster(node: NodeProcess, aet: str) -> str:
    return next(m["node_id"] for m in node.get_json("/api/mesh")["members"] if m["aet"] == aet)


