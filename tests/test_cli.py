"""The ``pacsmesh`` command as a user runs it: import, studies, echo."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from functools import cache
from pathlib import Path

from pydicom import dcmread

from tests.support import NodeProcess, free_port, one_file_per_instance

REPO = Path(__file__).resolve().parent.parent


def pacsmesh(
    *args: str, tmp_path: Path, columns: int = 80, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSMESH_")}
    # Commands without --data-dir read the config of a data dir: keep it in the test's.
    env["PACSMESH_DATA_DIR"] = str(tmp_path / "default-data-dir")
    env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True,
        timeout=timeout, cwd=REPO, env=env,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pacsmesh: error: ")
    return lines[0]


@cache
def expected_studies() -> dict[str, int]:
    """StudyInstanceUID -> instance count of every sample."""
    counts: Counter[str] = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a sample has a non-conformant UID
        for path in all_samples():
            counts[str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)] += 1
    return dict(counts)


def all_samples() -> list[Path]:
    # Import reads files itself: it takes even those DCMTK cannot send.
    return one_file_per_instance(dcmtk_only=False)


def make_tree(root: Path) -> int:
    """A folder tree as found on a CD or a share; return how many instances it holds."""
    samples = all_samples()
    for n, path in enumerate(samples):
        folder = root / f"patient{n % 3}" / f"series{n % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"IM{n:04d}")  # DICOMDIR-style names, no extension
    (root / "README.txt").write_text("Scanned at the front desk.\n")
    (root / "patient1" / "blob.bin").write_bytes(random.Random(1234).randbytes(4096))
    (root / "patient2" / "copy-of-first.dcm").write_bytes(samples[0].read_bytes())
    return len(samples)


def test_import_then_list_studies(tmp_path: Path) -> None:
    source = tmp_path / "cdrom"
    instances = make_tree(source)
    data_dir = tmp_path / "data"

    result = pacsmesh("import", "--data-dir", str(data_dir), str(source), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"stored {instances}, duplicate 1, conflicting 0, skipped 2 non-DICOM, failed 0"
    )

    result = pacsmesh("studies", "--data-dir", str(data_dir), "--json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["StudyInstanceUID"]: r["instances"] for r in rows} == expected_studies()
    assert sum(r["instances"] for r in rows) == instances
    assert all(r["series"] >= 1 and r["bytes"] > 0 for r in rows)
    # The table: a title with the count, one row per study (wide enough not to fold UIDs).
    result = pacsmesh("studies", "--data-dir", str(data_dir), tmp_path=tmp_path, columns=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(rows)} studies in {data_dir}" in result.stdout
    for row in rows:
        assert row["StudyInstanceUID"] in result.stdout
    lestrade = [line for line in result.stdout.splitlines() if "Lestrade^G" in line]
    assert len(lestrade) == 1
    assert "OT" in lestrade[0] and "20170101" in lestrade[0]

    # Importing the same tree again stores nothing new.
    result = pacsmesh("import", "--data-dir", str(data_dir), str(source), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"stored 0, duplicate {instances + 1}, conflicting 0,")


def test_import_single_files(tmp_path: Path) -> None:
    first, second = one_file_per_instance()[:2]
    data_dir = tmp_path / "data"
    result = pacsmesh(
        "import", "--data-dir", str(data_dir), str(first), str(second), str(first),
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stored 2, duplicate 1, conflicting 0, skipped 0")


def test_import_of_a_missing_path(tmp_path: Path) -> None:
    result = pacsmesh(
        "import", "--data-dir", str(tmp_path / "data"), str(tmp_path / "nowhere"),
        tmp_path=tmp_path,
    )
    assert result.returncode == 2
    assert "nowhere" in result.stderr
    assert not (tmp_path / "data").exists()


def test_studies_without_archive(tmp_path: Path) -> None:
    result = pacsmesh("studies", "--data-dir", str(tmp_path / "empty"), tmp_path=tmp_path)
    assert result.returncode != 0
    assert "no archive in" in one_error_line(result)


def test_import_into_a_data_dir_in_use(make_node, tmp_path: Path) -> None:
    node: NodeProcess = make_node("running").start()
    sample = one_file_per_instance()[0]
    result = pacsmesh(
        "import", "--data-dir", str(node.data_dir), str(sample), tmp_path=tmp_path, timeout=30,
    )
    assert result.returncode != 0
    line = one_error_line(result)
    assert str(node.data_dir) in line
    assert "in use by another PACSmesh process" in line
    assert result.stdout == ""
    assert node.status()["instances"] == 0  # the running node is unaffected


def test_echo_running_node(node: NodeProcess, tmp_path: Path) -> None:
    remote = f"{node.aet}@127.0.0.1:{node.dicom_port}"
    result = pacsmesh("echo", remote, "--aet", "TESTER", tmp_path=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"C-ECHO {remote}: success in ")
    # Without --aet the calling AE title comes from the configuration.
    result = pacsmesh("echo", remote, tmp_path=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr


def test_echo_closed_port(tmp_path: Path) -> None:
    remote = f"NOBODY@127.0.0.1:{free_port()}"
    result = pacsmesh(
        "echo", remote, "--aet", "TESTER", "--timeout", "5", tmp_path=tmp_path, timeout=30
    )
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"cannot connect to {remote}" in line
    assert result.stdout == ""


def test_echo_malformed_address(tmp_path: Path) -> None:
    result = pacsmesh("echo", "127.0.0.1:104", tmp_path=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "AET@HOST:PORT" in one_error_line(result)


def test_status_summarises_a_running_node(make_node) -> None:
    node = make_node().start()
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "status", "--data-dir", str(node.data_dir),
         "--http-port", str(node.http_port)], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"node {node.aet}" in result.stdout
    assert "replication: 0 copies waiting, 0 under-replicated studies" in result.stdout
    assert "peers: none" in result.stdout
