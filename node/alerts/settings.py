"""The alert settings a user may set (pacsmesh.toml, PACSMESH_* env, CLI), parsed and
checked; node/config.py merges the sources and turns :class:`AlertSettingError` into its
one-line ConfigError."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from node.alerts.rules import Thresholds

KEYS = ("disk_quota", "disk_free_min", "alert_member_dead_after",
        "alert_under_replicated_after", "alert_certificate_days", "alert_clock_offset",
        "alert_webhook", "alert_syslog")


class AlertSettingError(ValueError):
    pass


@dataclass(frozen=True)
class AlertSettings:
    thresholds: Thresholds = field(default_factory=Thresholds)
    webhook: str | None = None
    syslog: str | None = None


def _bytes(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():  # from the environment
        return int(value)
    raise AlertSettingError(f"{key} must be a whole number of bytes >= 0, got {value!r}")


def _positive(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0 < number < 1e9:
        raise AlertSettingError(f"{key} must be a positive number, got {value!r}")
    return number


def _webhook(value: Any) -> str | None:
    if not value:
        return None
    url = str(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AlertSettingError(f"alert_webhook must be an http(s) URL, got {url!r}")
    return url


def parse(merged: Mapping[str, Any]) -> AlertSettings:
    d = Thresholds()
    thresholds = Thresholds(
        disk_quota=_bytes(merged.get("disk_quota", d.disk_quota), "disk_quota"),
        disk_free_min=_bytes(merged.get("disk_free_min", d.disk_free_min), "disk_free_min"),
        member_dead_after=_positive(merged.get("alert_member_dead_after",
                                               d.member_dead_after), "alert_member_dead_after"),
        under_replicated_after=_positive(
            merged.get("alert_under_replicated_after", d.under_replicated_after),
            "alert_under_replicated_after"),
        certificate_days=_positive(merged.get("alert_certificate_days", d.certificate_days),
                                   "alert_certificate_days"),
        clock_offset_max=_positive(merged.get("alert_clock_offset", d.clock_offset_max),
                                   "alert_clock_offset"),
    )
    syslog = str(merged["alert_syslog"]) if merged.get("alert_syslog") else None
    return AlertSettings(thresholds, _webhook(merged.get("alert_webhook")), syslog)
