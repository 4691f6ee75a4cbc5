"""Alerts on a real node: a crossed quota shows in /api/alerts, /api/status and
`pacsmesh status`, and goes to syslog (a real UDP socket standing in for the daemon)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from pydicom.data import get_testdata_file

from tests.mesh_support import wait_for
from tests.support import NodeProcess, storescu


def test_quota_crossed_alerts_everywhere(make_node, tmp_path: Path) -> None:
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    syslog.bind(("127.0.0.1", 0))
    syslog.settimeout(1.0)
    node: NodeProcess = make_node()
    node.data_dir.mkdir(parents=True)
    # CT_small is about 39 kB: one instance is over a 40 kB quota's 90%.
    (node.data_dir / "pacsmesh.toml").write_text(
        f'disk_quota = 40000\ndisk_free_min = 0\n'
        f'alert_syslog = "127.0.0.1:{syslog.getsockname()[1]}"\n')
    node.start()
    try:
        assert node.get_json("/api/alerts") == {"alerts": []}
        assert storescu(node, [Path(get_testdata_file("CT_small.dcm"))]) == []
        alerts = node.get_json("/api/alerts")["alerts"]
        assert [a["key"] for a in alerts] == ["disk-quota"]
        assert node.status()["alerts"] == alerts

        status = subprocess.run(
            [sys.executable, "-m", "node.cli", "status", "--data-dir", str(node.data_dir),
             "--http-port", str(node.http_port)], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "alerts: 1" in status.stdout
        assert "of its quota" in status.stdout

        received: list[str] = []

        def heard() -> bool:
            try:
                received.append(syslog.recv(4096).decode(errors="replace"))
            except TimeoutError:
                pass
            return any("alert raised" in r and "quota" in r for r in received)

        wait_for(heard, timeout=40)
    finally:
        syslog.close()
