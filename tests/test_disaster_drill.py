"""The disaster drill of examples/, shortened: two sites, a WAN cut, a killed server, a cut
workstation; afterwards nothing is lost and every study is on its owners again. Whatever
happens, the drill leaves no namespace, link or process behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns import netns_available
from tests.support import ctrl_c_default

DRILL = Path(__file__).resolve().parents[1] / "examples" / "disaster_drill" / "drill.py"

pytestmark = pytest.mark.skipif(
    netns_available() is not None, reason=f"multi-host tests: {netns_available()}"
)


def _leftovers(before: tuple[set[str], set[str]]) -> tuple[set[str], set[str]]:
    """Namespaces and links (ours all start with "pm") made since ``before``."""
    now = _ours()
    return now[0] - before[0], now[1] - before[1]


def _ours() -> tuple[set[str], set[str]]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    return ({line.split()[0] for line in netns.splitlines() if line.startswith("pm")},
            {line.split("@")[0].split()[0] for line in links.splitlines()
             if line.startswith("pm")})


def _drill_nodes(work: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "node.cli run" in line and str(work) in line]


def test_short_drill_loses_nothing_and_converges(tmp_path: Path) -> None:
    before = _ours()
    result = subprocess.run(
        [sys.executable, str(DRILL), "--short", "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    lines = {line.strip().split("  ")[0]: line for line in result.stdout.splitlines()}
    assert lines["lost"].split()[-1] == "0", report
    assert lines["converged"].split()[1] == "yes", report
    assert "serves" in report and "FAILED" not in report, report
    assert _leftovers(before) == (set(), set())
    assert _drill_nodes(tmp_path) == []


def test_interrupted_drill_cleans_up(tmp_path: Path) -> None:
    before = _ours()
    proc = subprocess.Popen(
        [sys.executable, str(DRILL), "--short", "--work-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=ctrl_c_default,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "mesh formed" in line:
            break
    time.sleep(1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, with the five nodes running
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, rest
    assert _leftovers(before) == (set(), set())
    assert _drill_nodes(tmp_path) == []
