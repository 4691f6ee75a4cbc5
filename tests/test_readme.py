"""README's two set-up commands are the ones that work: CI runs the test command."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _shell_blocks(text: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in text.splitlines():
        if line.startswith("```sh"):
            inside, current = True, []
        elif line.startswith("```") and inside:
            inside = False
            blocks.append("\n".join(current).strip())
        elif inside:
            current.append(line)
    return blocks


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci_lines = [
        line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "export "))
    ]
    assert len(ci_lines) == 1, ci_lines
    assert ci_lines[0] in _shell_blocks(readme)


def test_readme_run_command_installs_and_starts_a_node() -> None:
    blocks = _shell_blocks((ROOT / "README.md").read_text())
    assert any("pip install ." in b and b.endswith("pacsmesh run") for b in blocks), blocks
