"""The alert rules over hand-made snapshots, with the clock passed in: no sockets."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from aiohttp import web

from node.alerts.notify import Notifier, Targets
from node.alerts.rules import DAY, Alert, AlertCenter, Severity, Thresholds, evaluate
from node.mesh_view import Certificate, Health, Member, MeshSnapshot, UnderReplicated

NOW = 1_800_000_000.0
GIB = 2**30


def health(**kw: object) -> Health:
    base = Health(aet="A", node_id="a" * 64, version="0", at=NOW, studies=1, instances=1,
                  stored_bytes=10 * GIB, disk_free=500 * GIB, disk_total=1000 * GIB,
                  quarantined=0)
    return replace(base, **kw)  # type: ignore[arg-type]


def keys(alerts: list[Alert]) -> list[str]:
    return [a.key for a in alerts]


def test_a_healthy_node_has_no_alerts() -> None:
    assert evaluate(health(), Thresholds(disk_quota=100 * GIB), {}) == []


def test_quota_above_ninety_percent_warns_and_over_it_is_critical() -> None:
    t = Thresholds(disk_quota=100 * GIB)
    assert evaluate(health(stored_bytes=90 * GIB), t, {}) == []
    [warn] = evaluate(health(stored_bytes=91 * GIB), t, {})
    assert (warn.key, warn.severity) == ("disk-quota", Severity.WARNING)
    assert "91%" in warn.message
    [full] = evaluate(health(stored_bytes=100 * GIB), t, {})
    assert full.severity is Severity.CRITICAL


def test_an_alert_keeps_the_time_it_was_first_raised() -> None:
    center = AlertCenter(Thresholds(disk_quota=100 * GIB))
    [first] = center.current(health(stored_bytes=95 * GIB))
    [later] = center.current(health(stored_bytes=96 * GIB, at=NOW + 60))
    assert first.since == later.since == NOW
    assert center.current(health(at=NOW + 120)) == []
    [again] = center.current(health(stored_bytes=95 * GIB, at=NOW + 180))
    assert again.since == NOW + 180


def test_low_free_space() -> None:
    [alert] = evaluate(health(disk_free=GIB), Thresholds(disk_free_min=2 * GIB), {})
    assert alert.key == "disk-free"


def test_a_member_dead_longer_than_the_threshold() -> None:
    t = Thresholds(member_dead_after=300)
    fresh = Member("b" * 64, "B", "dead", last_seen=NOW - 100)
    old = Member("c" * 64, "C", "dead", last_seen=NOW - 400)
    never = Member("d" * 64, "D", "dead", first_seen=NOW - 1000)
    alive = Member("e" * 64, "E", "alive", last_seen=NOW - 1000)
    alerts = evaluate(health(mesh=MeshSnapshot(members=(fresh, old, never, alive))), t, {})
    assert keys(alerts) == ["member-dead:" + "d" * 64, "member-dead:" + "c" * 64]
    assert alerts[1].since == NOW - 400 and "C" in alerts[1].message


def test_under_replicated_for_too_long_counts_from_its_onset() -> None:
    t = Thresholds(under_replicated_after=600)
    center = AlertCenter(t)
    snap = MeshSnapshot(under_replicated=(UnderReplicated("1.2.3", "copies owed"),))
    assert center.current(health(mesh=snap)) == []
    assert center.current(health(mesh=snap, at=NOW + 599)) == []
    [late] = center.current(health(mesh=snap, at=NOW + 601))
    assert (late.key, late.since) == ("under-replicated", NOW)
    assert "1.2.3" not in late.message  # counts, never which study
    # Replicated, then owed again: a new onset.
    assert center.current(health(at=NOW + 700)) == []
    assert center.current(health(mesh=snap, at=NOW + 800)) == []


def test_quarantined_objects() -> None:
    [alert] = evaluate(health(quarantined=2), Thresholds(), {})
    assert alert.severity is Severity.CRITICAL and "2 object" in alert.message


def test_certificates_about_to_expire_or_expired() -> None:
    certs = (Certificate("HTTPS certificate", NOW + 10 * DAY),
             Certificate("DICOM TLS certificate", NOW - 1),
             Certificate("node certificate", NOW + 3000 * DAY))
    alerts = evaluate(health(certificates=certs), Thresholds(certificate_days=30), {})
    assert keys(alerts) == ["certificate:DICOM TLS certificate", "certificate:HTTPS certificate"]
    assert alerts[0].severity is Severity.CRITICAL and "expired" in alerts[0].message
    assert "10 day" in alerts[1].message


def test_clock_offset_above_two_seconds() -> None:
    near = Member("b" * 64, "B", "alive", clock_offset=1.5)
    far = Member("c" * 64, "C", "alive", clock_offset=-2.5)
    [alert] = evaluate(health(mesh=MeshSnapshot(members=(near, far))), Thresholds(), {})
    assert alert.key == "clock-offset:" + "c" * 64 and "-2.5 s" in alert.message


async def test_notifier_posts_raised_and_cleared_once_each() -> None:
    got: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    current = [Alert("quarantined", Severity.CRITICAL, "1 object(s) failed", NOW)]

    async def alerts() -> list[Alert]:
        return list(current)

    notifier = Notifier("A", Targets(webhook=f"http://127.0.0.1:{port}/hook"), alerts)
    try:
        await notifier.check()
        await notifier.check()
        current.clear()
        await notifier.check()
        await asyncio.sleep(0)
    finally:
        await notifier.stop()
        await runner.cleanup()
    assert [(g["key"], g["change"], g["node"]) for g in got] == [
        ("quarantined", "raised", "A"), ("quarantined", "cleared", "A")]


def test_alert_settings_from_the_environment_and_their_errors(tmp_path) -> None:
    import pytest

    from node.config import ConfigError, load_config

    env = {"PACSMESH_DISK_QUOTA": "5000", "PACSMESH_ALERT_MEMBER_DEAD_AFTER": "30",
           "PACSMESH_ALERT_WEBHOOK": "https://ops.example/hook"}
    cfg = load_config({"data_dir": str(tmp_path), "aet": "A"}, env=env)
    assert cfg.alerts.thresholds.disk_quota == 5000
    assert cfg.alerts.thresholds.member_dead_after == 30
    assert cfg.alerts.webhook == "https://ops.example/hook"
    for key, bad in (("disk_quota", "-1"), ("alert_webhook", "ftp://x"),
                     ("alert_clock_offset", "0")):
        with pytest.raises(ConfigError, match=key):
            load_config({"data_dir": str(tmp_path), "aet": "A", key: bad}, env={})
