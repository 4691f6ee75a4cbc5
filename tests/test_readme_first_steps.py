"""README's first steps, run as written on a fresh node: only the ports and the data dir
are changed (the tests share the machine), the commands are README's own."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from pydicom.data import get_testdata_file

from tests.support import NodeProcess, sop_instance_uid
from tests.test_readme import ROOT, _shell_blocks

SECTION = "### First steps"
CT = Path(get_testdata_file("CT_small.dcm"))


def _steps() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    blocks = _shell_blocks(text[text.index(SECTION):])
    return blocks[0], blocks[1]


def test_first_steps_store_find_and_retrieve(make_node, tmp_path: Path) -> None:
    run, client = _steps()
    argv = shlex.split(run)
    assert argv[:2] == [".venv/bin/pacsmesh", "run"]
    options = argv[2:]
    at = options.index("--aet")
    aet = options[at + 1]
    # README's options besides the AE title, after the ports and data dir every test node
    # gets; none of the tests' own allowed AEs.
    node: NodeProcess = make_node("fresh", aet=aet, allowed_aets=(),
                                  extra_args=tuple(options[:at] + options[at + 2:])).start()
    script = client.replace("localhost 11112", f"127.0.0.1 {node.dicom_port}").replace(
        ".venv/bin/python", sys.executable)
    out = tmp_path / "here"
    out.mkdir()
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=out,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "E:" not in done.stderr, done.stderr
    assert "CompressedSamples^CT1" in done.stderr + done.stdout  # findscu's answer
    assert [p.name for p in out.iterdir()] == [f"CT.{sop_instance_uid(CT)}"]


