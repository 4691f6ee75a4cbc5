"""examples/three_nodes/run.py as a user runs it: three nodes, one study, replicated, got back."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ctrl_c_default, dataset_bytes, received_files

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "examples" / "three_nodes" / "run.py"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PACSMESH_")}


def _closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def _http_ports(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"HTTP (\d+)", output)]


def test_once_replicates_and_gets_every_instance_back(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--once", "--dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=REPO, env=_env())
    assert result.returncode == 0, result.stdout + result.stderr
    held = re.search(r"study held by (\d) nodes", result.stdout)
    assert held and int(held.group(1)) >= 2, result.stdout
    # Checked here too, not only by the script: the files getscu wrote are the stored bytes.
    got = received_files(tmp_path / "retrieved")
    stored = received_files_in(tmp_path / "node1" / "objects")
    assert len(got) == 5
    assert {uid: dataset_bytes(p) for uid, p in got.items()} == {
        uid: dataset_bytes(p) for uid, p in stored.items()}
    assert len(_http_ports(result.stdout)) == 3
    assert all(_closed(port) for port in _http_ports(result.stdout))


def received_files_in(objects: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder in sorted(p for p in objects.iterdir() if p.is_dir()):
        out.update(received_files(folder))
    return out


def test_ctrl_c_stops_every_node(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, env=_env(), preexec_fn=ctrl_c_default)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops them" in line or time.monotonic() > deadline:
            break
    output = "".join(lines)
    assert "Ctrl-C stops them" in output, output
    ports = _http_ports(output)
    assert not any(_closed(port) for port in ports)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert all(_closed(port) for port in ports)
