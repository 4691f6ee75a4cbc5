"""Shared test helpers: real node processes, DCMTK tools, real sample images."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom.dsutils import split_dataset

# Every DCMTK call gets finite timeouts, so a broken node fails a test instead of hanging it.
DCMTK_TIMEOUTS = ["-to", "10", "-ta", "10", "-td", "60"]


def ctrl_c_default() -> None:
    """``preexec_fn`` for a child the test stops with SIGINT, as Ctrl-C would. A shell
    starts background jobs (``cmd &``) with SIGINT ignored, which their children inherit,
    and a Python started so never raises KeyboardInterrupt: the test would pass or fail
    by how the suite was launched."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_HANDED_OUT: set[int] = set()
# Below Linux's ephemeral range (32768-60999 by default; checked in free_port): the kernel
# never gives these to an outgoing connection as its source port. A node killed and
# started again on its port used to find it taken now and then by some connection's
# source port (its own peers' or another test's), ESTABLISHED or in TIME_WAIT.
PORTS = range(20000, 32768)
_pick = random.Random()


def free_port() -> int:
    """A port free now, below the ephemeral range, never one this process handed out
    before (a node given one port twice refuses to start: "ports must differ")."""
    low = _ephemeral_low()
    while True:
        port = _pick.randrange(PORTS.start, min(PORTS.stop, low))
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return PORTS.stop


def dcmtk(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; never raises on a non-zero exit (tests look at the output)."""
    return subprocess.run(
        [tool, *DCMTK_TIMEOUTS, *args], capture_output=True, text=True, timeout=timeout
    )


@dataclass
class NodeProcess:
    """``pacsmesh run`` as a real child process on loopback."""

    data_dir: Path
    aet: str = "PACSMESH"
    modalities: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    # Calling AEs the tests retrieve with (DCMTK's defaults, pynetdicom requesters):
    # by default a node serves C-GET/C-MOVE only to AEs it knows.
    allowed_aets: tuple[str, ...] = ("GETSCU", "MOVESCU", "VIEWER", "FAULTS")
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    mesh_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "node.cli", "run", "--data-dir", str(self.data_dir),
            "--aet", self.aet, "--bind", "127.0.0.1", "--dicom-port", str(self.dicom_port),
            "--http-port", str(self.http_port), "--mesh-port", str(self.mesh_port),
            "--no-mdns", *self.extra_args,
        ]
        for m in self.modalities:
            cmd += ["--modality", m]
        for aet in self.allowed_aets:
            cmd += ["--allowed-aet", aet]
        return cmd

    def start(self, timeout: float = 30) -> NodeProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.status()
                with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"node did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def get_json(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as rsp:
            return json.loads(rsp.read())

    def status(self) -> dict[str, Any]:
        return self.get_json("/api/status")

    @property
    def address(self) -> list[str]:
        return ["127.0.0.1", str(self.dicom_port)]


def data_store_dir() -> Path:
    import data_store

    return Path(data_store.__file__).parent / "data"


# pydicom-data files that are truly broken, which ingest refuses (tests/test_validate.py):
# UIDs that are hex digests (not digits and dots), and pixel data cut short without its
# sequence delimiter.
TRULY_BROKEN = {"bad_sequence.dcm": "SOPInstanceUID is not digits and dots",
                "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated"}


@cache
def sample_index() -> dict[str, list[Path]]:
    """SOP Instance UID -> every pydicom-data file that encodes it (sorted by name)."""
    groups: dict[str, list[Path]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(data_store_dir().iterdir()):
            if path.name in TRULY_BROKEN:
                continue
            try:
                ds = dcmread(path, stop_before_pixels=True)
                uid = str(ds.SOPInstanceUID)
            except Exception:
                continue  # e.g. a file without Part 10 header: not a sample for storage
            if "StudyInstanceUID" in ds and "SeriesInstanceUID" in ds:
                groups.setdefault(uid, []).append(path)
    return groups


# DCMTK 3.6.7 cannot send this one ("No SOP Class or Instance UID in file"): its UIDs
# sit in UN elements. It is a DCMTK limit, not a PACSmesh one; import covers it.
DCMTK_UNREADABLE = {"explicit_VR-UN.dcm"}


def one_file_per_instance(dcmtk_only: bool = True) -> list[Path]:
    """The real images of pydicom-data, one file per SOP Instance UID."""
    files = [paths[0] for paths in sample_index().values()]
    if dcmtk_only:
        files = [p for p in files if p.name not in DCMTK_UNREADABLE]
    return files


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file, without preamble and file meta."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def transfer_syntax(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def sop_instance_uid(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def received_files(directory: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, for every file a DCMTK tool wrote into ``directory``."""
    out = {}
    for path in sorted(directory.iterdir()):
        if path.is_file():
            out[sop_instance_uid(path)] = path
    return out


def ensure_on_path(*tools: str) -> None:
    missing = [t for t in tools if not any(
        (Path(p) / t).exists() for p in os.environ.get("PATH", "").split(os.pathsep)
    )]
    if missing:
        raise RuntimeError(f"missing tools {missing}: install Debian's dcmtk (see README)")


# DCMTK negotiates compressed transfer syntaxes only when asked: storescu proposes one
# compressed syntax per run ("-x?"), getscu accepts one ("+x?"). Empty: uncompressed.
DCMTK_TS_FLAG = {
    "1.2.840.10008.1.2.4.90": "xv",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "xw",  # JPEG 2000
    "1.2.840.10008.1.2.4.70": "xs",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "xt",  # JPEG-LS lossless
    "1.2.840.10008.1.2.5": "xr",  # RLE lossless
    "1.2.840.10008.1.2.4.50": "xy",  # JPEG baseline
}


def storescu(node: Any, files: list[Path], *extra: str) -> list[str]:
    """Send ``files`` to ``node`` (anything with ``aet`` and ``address``) with DCMTK
    storescu, one run per transfer syntax.

    Returns the files storescu reported as failed (empty when every store succeeded).
    """
    groups: dict[str, list[Path]] = {}
    for path in files:
        groups.setdefault(DCMTK_TS_FLAG.get(transfer_syntax(path), ""), []).append(path)
    failed: list[str] = []
    for flag, paths in sorted(groups.items()):
        # -R: propose exactly the files' SOP classes (storescu's default list lacks some).
        args = ["-R", "-nh", "-aec", node.aet, *extra]
        if flag:
            args.append("-" + flag)
        result = dcmtk("storescu", *args, *node.address, *map(str, paths))
        failed += [line for line in result.stderr.splitlines() if line.startswith("E:")]
        if result.returncode != 0 and not failed:
            failed.append(result.stderr.strip() or f"storescu exit {result.returncode}")
    return failed


def getscu_run(node: Any, out: Path, sop_uid: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """C-GET one instance with DCMTK getscu into ``out``, bit for bit as it arrives."""
    out.mkdir(parents=True, exist_ok=True)
    return dcmtk(
        # +B: write what arrived, bit for bit (else getscu re-encodes group lengths).
        "getscu", "-S", "+B", "-aec", node.aet, "-od", str(out), *extra,
        "-k", "QueryRetrieveLevel=IMAGE", "-k", f"SOPInstanceUID={sop_uid}",
        # Study Root needs the study and series keys above IMAGE level: universal match.
        "-k", "StudyInstanceUID", "-k", "SeriesInstanceUID",
        *node.address,
    )


def getscu_instance(node: Any, out: Path, sop_uid: str, *extra: str) -> Path:
    """:func:`getscu_run` that must succeed; returns the file received."""
    result = getscu_run(node, out, sop_uid, *extra)
    assert result.returncode == 0, result.stderr
    files = received_files(out)
    assert list(files) == [sop_uid], result.stderr
    return files[sop_uid]
