"""The shape of the code, checked: dependencies point one way, types check, and modules
stay small.

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


def test_import_contracts_are_kept() -> None:
    # The linter of this interpreter's environment (not whichever is first on the PATH).
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_types_check() -> None:
    # mypy's settings, and the one block of what pynetdicom's typing makes it skip, are in
    # pyproject.toml.
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_module_is_over_the_line_limit() -> None:
    too_long = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                too_long[name] = lines
    assert not too_long, f"modules over {MAX_LINES} lines (split them by job): {too_long}"
