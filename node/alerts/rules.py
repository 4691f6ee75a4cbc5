"""Alerts computed from a :class:`node.mesh_view.Health` snapshot: pure code, the clock
passed in, so every rule is tested without sockets. Messages carry counts, AE titles and
node ids, never patient data: they go to syslog and webhooks."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from node.mesh_view import Health

DAY = 86400.0


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Thresholds:
    disk_quota: int = 0  # bytes the archive may hold; 0: no quota
    quota_ratio: float = 0.9  # of disk_quota
    disk_free_min: int = 2 * 2**30  # bytes free on the data dir's file system
    member_dead_after: float = 300.0  # s a member may be dead before it is an alert
    under_replicated_after: float = 3600.0  # s a study may wait for its owners
    certificate_days: float = 30.0  # warn this many days before a certificate expires
    clock_offset_max: float = 2.0  # s between a member's clock and ours


@dataclass(frozen=True)
class Alert:
    key: str  # stable while the condition lasts: "disk-quota", "member-dead:<node id>"
    severity: Severity
    message: str
    since: float  # epoch s the condition started (as far as this node knows)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "severity": self.severity.value}


class Onsets:
    """When each condition was first seen in an unbroken run of snapshots: what a
    snapshot alone cannot say (a study's debt carries no start time)."""

    def __init__(self) -> None:
        self._first: dict[str, float] = {}

    def update(self, present: Iterable[str], now: float) -> Mapping[str, float]:
        keys = set(present)
        self._first = {k: self._first.get(k, now) for k in keys}
        return self._first

    @property
    def first(self) -> Mapping[str, float]:
        return self._first


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _disk(h: Health, t: Thresholds) -> Iterable[Alert]:
    if t.disk_quota > 0 and h.stored_bytes > t.quota_ratio * t.disk_quota:
        yield Alert("disk-quota", Severity.CRITICAL if h.stored_bytes >= t.disk_quota
                    else Severity.WARNING,
                    f"archive holds {_gib(h.stored_bytes)}, "
                    f"{100 * h.stored_bytes / t.disk_quota:.0f}% of its quota of "
                    f"{_gib(t.disk_quota)}", h.at)
    if h.disk_free < t.disk_free_min:
        yield Alert("disk-free", Severity.CRITICAL,
                    f"{_gib(h.disk_free)} free on the data dir's disk "
                    f"(alert below {_gib(t.disk_free_min)})", h.at)


def _members(h: Health, t: Thresholds) -> Iterable[Alert]:
    for m in h.mesh.members:
        if m.is_self:
            continue
        name = m.aet or m.node_id[:16]
        if m.state == "dead":
            # Dead since its last answer (or since it was first heard of, if never).
            since = m.last_seen if m.last_seen is not None else m.first_seen
            if h.at - since > t.member_dead_after:
                yield Alert(f"member-dead:{m.node_id}", Severity.CRITICAL,
                            f"member {name} has not answered for {_ago(h.at - since)}", since)
        if m.clock_offset is not None and abs(m.clock_offset) > t.clock_offset_max:
            yield Alert(f"clock-offset:{m.node_id}", Severity.WARNING,
                        f"member {name}'s clock is {m.clock_offset:+.1f} s from ours", h.at)


def _replication(h: Health, t: Thresholds, onsets: Mapping[str, float]) -> Iterable[Alert]:
    late = [onsets[u.study_uid] for u in h.mesh.under_replicated
            if u.study_uid in onsets and h.at - onsets[u.study_uid] > t.under_replicated_after]
    if late:
        yield Alert("under-replicated", Severity.CRITICAL,
                    f"{len(late)} studies under-replicated for more than "
                    f"{_ago(t.under_replicated_after)}", min(late))


def _integrity(h: Health) -> Iterable[Alert]:
    if h.quarantined:
        yield Alert("quarantined", Severity.CRITICAL,
                    f"{h.quarantined} object(s) failed their integrity check and are in "
                    "quarantine", h.at)


def _certificates(h: Health, t: Thresholds) -> Iterable[Alert]:
    for c in h.certificates:
        left = c.not_after - h.at
        if left < t.certificate_days * DAY:
            yield Alert(f"certificate:{c.what}",
                        Severity.CRITICAL if left <= 0 else Severity.WARNING,
                        f"{c.what} expired" if left <= 0
                        else f"{c.what} expires in {left / DAY:.0f} day(s)", h.at)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def evaluate(h: Health, t: Thresholds, onsets: Mapping[str, float]) -> list[Alert]:
    """Every alert that holds in ``h``; ``onsets`` maps each under-replicated study to
    when it was first seen so (:class:`Onsets`). Critical first, then oldest first."""
    alerts = [*_disk(h, t), *_members(h, t), *_replication(h, t, onsets), *_integrity(h),
              *_certificates(h, t)]
    return sorted(alerts, key=lambda a: (a.severity is not Severity.CRITICAL, a.since, a.key))


class AlertCenter:
    """The node's current alerts: :func:`evaluate` with the onsets kept between calls."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self._studies = Onsets()
        self._alerts = Onsets()

    def study_onsets(self) -> Mapping[str, float]:
        """When each study now under-replicated was first seen so."""
        return self._studies.first

    def current(self, h: Health) -> list[Alert]:
        """As :func:`evaluate`; an alert raised on the snapshot's time alone (a full disk)
        keeps the time it was first raised."""
        onsets = self._studies.update((u.study_uid for u in h.mesh.under_replicated), h.at)
        alerts = evaluate(h, self.thresholds, onsets)
        first = self._alerts.update((a.key for a in alerts), h.at)
        return [replace(a, since=min(a.since, first[a.key])) for a in alerts]
