"""A real Orthanc on loopback, for tests that need an existing PACS to pull from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import free_port

ORTHANC = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")


@dataclass
class OrthancProcess:
    work: Path
    aet: str = "ORTHANC"
    # AET -> (host, port): where Orthanc may C-MOVE to (and who may C-GET, C-FIND from it).
    modalities: dict[str, tuple[str, int]] = field(default_factory=dict)
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> list[str]:
        return ["127.0.0.1", str(self.dicom_port)]

    @property
    def remote(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "pacsmesh-test",
            "StorageDirectory": str(self.work / "storage"),
            "IndexDirectory": str(self.work / "index"),
            "StorageCompression": False,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {
                aet: [aet, host, port] for aet, (host, port) in self.modalities.items()
            },
            "Plugins": [],
        }

    def start(self, timeout: float = 60) -> OrthancProcess:
        assert ORTHANC, "Orthanc is not installed (apt-get install orthanc)"
        self.work.mkdir(parents=True, exist_ok=True)
        config = self.work / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        # DCMTK inside Orthanc leaves Nagle on without this: ~40 ms per response.
        env = {**os.environ, "TCP_NODELAY": "1"}
        with (self.work / "orthanc.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [ORTHANC, str(config)], stdout=log, stderr=subprocess.STDOUT, env=env,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.get_json("/system")
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"Orthanc did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        path = self.work / "orthanc.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def get_json(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as rsp:
            return json.loads(rsp.read())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
