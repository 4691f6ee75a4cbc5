"""The disaster drill of examples/, shortened: two sites, a WAN cut, a killed server, a cut
workstation; afterwards nothing is lost and every study is on its owners again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns import netns_available

DRILL = Path(__file__).resolve().parents[1] / "examples" / "disaster_drill" / "drill.py"

pytestmark = pytest.mark.skipif(
    netns_available() is not None, reason=f"multi-host tests: {netns_available()}"
)


def test_short_drill_loses_nothing_and_converges(tmp_path: Path) -> None:
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
