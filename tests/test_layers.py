"""The shape of the code, checked: dependencies point one way, and modules stay small.

The rules themselves are the import-linter contracts in pyproject.toml (on packages, so a
module added later is covered); this test runs them so that a violation fails CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "discovery", "replication")
MAX_LINES = 600
# Being split in other branches of issue 13 right now; the lead empties this after merging
# them, and from then on every module is held to MAX_LINES.
TOO_LONG_FOR_NOW = frozenset({"node/index.py", "discovery/service.py"})


def test_import_contracts_are_kept() -> None:
    # The linter of this interpreter's environment (not whichever is first on the PATH).
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_module_is_over_the_line_limit() -> None:
    too_long = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES and name not in TOO_LONG_FOR_NOW:
                too_long[name] = lines
    assert not too_long, f"modules over {MAX_LINES} lines (split them by job): {too_long}"
