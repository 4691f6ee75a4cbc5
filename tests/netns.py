"""Hosts in Linux network namespaces on one bridge, for multi-host tests (needs root).

Each host gets its own namespace, a veth pair into a private bridge, and an address in a
subnet only these namespaces use. Everything is removed on exit, even after a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_available() -> str | None:
    """None if namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 is not installed"
    probe = f"pmprobe{secrets.token_hex(3)}"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    netns: str
    veth: str  # our end, in the root namespace, on the bridge
    address: str
    prefix: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True,
            timeout=timeout,
        )

    def spawn(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *cmd], stdout=fh, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def link_down(self) -> None:
        _ip("link", "set", self.veth, "down")

    def link_up(self) -> None:
        _ip("link", "set", self.veth, "up")

    def change_address(self, new: str) -> None:
        # Old one first: deleting a primary address would take secondaries with it.
        self.run("ip", "addr", "del", f"{self.address}/{self.prefix}", "dev", "eth0")
        self.run("ip", "addr", "add", f"{new}/{self.prefix}", "dev", "eth0")
        self.run("ip", "route", "replace", "224.0.0.0/4", "dev", "eth0")
        self.address = new


class Network:
    """A bridge and up to 250 hosts in 10.<a>.<b>.0/24 (random, so parallel runs differ)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.tag = tag
        self.bridge = f"pmbr{tag}"
        self.subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
        self.hosts: list[Host] = []
        self.segments: list[tuple[str, str]] = []  # (bridge, link veth in the root ns)
        self._make_bridge(self.bridge)

    @staticmethod
    def _make_bridge(name: str) -> None:
        _ip("link", "add", name, "type", "bridge")
        # Without a multicast querier, snooping may drop mDNS: flood multicast instead.
        _ip("link", "set", name, "type", "bridge", "mcast_snooping", "0")
        _ip("link", "set", name, "up")

    def add_segment(self) -> str:
        """A second bridge (another site) joined to the first by a link that
        ``cut_segment``/``heal_segment`` take down and up: a WAN to partition."""
        index = len(self.segments) + 1
        bridge = f"pmsg{self.tag}{index}"
        link, far = f"pmw{self.tag}{index}", f"pmx{self.tag}{index}"
        self._make_bridge(bridge)
        _ip("link", "add", link, "type", "veth", "peer", "name", far)
        _ip("link", "set", link, "master", self.bridge)
        _ip("link", "set", far, "master", bridge)
        for dev in (link, far):
            _ip("link", "set", dev, "up")
        self.segments.append((bridge, link))
        return bridge

    def cut_segment(self, bridge: str) -> None:
        _ip("link", "set", dict(self.segments)[bridge], "down")

    def heal_segment(self, bridge: str) -> None:
        _ip("link", "set", dict(self.segments)[bridge], "up")

    def add_host(self, name: str, bridge: str | None = None) -> Host:
        index = len(self.hosts) + 1
        netns = f"pm{self.tag}{index}"
        veth = f"pmv{self.tag}{index}"
        address = f"{self.subnet}.{index}"
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", bridge or self.bridge)
        _ip("link", "set", veth, "up")
        host = Host(name, netns, veth, address, 24)
        for cmd in (
            ["ip", "addr", "add", f"{address}/24", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
            ["ip", "link", "set", "lo", "up"],
            # mDNS needs a route for 224.0.0.0/4 out of eth0.
            ["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"],
        ):
            result = host.run(*cmd)
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} in {netns}: {result.stderr.strip()}")
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            for proc in host.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
            _ip("netns", "del", host.netns, check=False)
            _ip("link", "del", host.veth, check=False)
        for bridge, link in self.segments:
            _ip("link", "del", link, check=False)  # deletes its peer too
            _ip("link", "del", bridge, check=False)
        _ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class NamespacedNode:
    """``pacsmesh run`` inside a host's namespace, with its default ports."""

    host: Host
    data_dir: Path
    aet: str
    extra: tuple[str, ...] = ()
    http_port: int = 8080
    dicom_port: int = 11112
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self) -> NamespacedNode:
        cmd = [
            sys.executable, "-m", "node.cli", "run", "--data-dir", str(self.data_dir),
            "--aet", self.aet, "--http-port", str(self.http_port),
            "--dicom-port", str(self.dicom_port), *self.extra,
        ]
        self.proc = self.host.spawn(cmd, self.log_path)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def get_json(self, path: str) -> Any:
        # Asked from inside the namespace: nothing in the root namespace needs an address.
        result = self.host.run(
            "curl", "-sf", "--max-time", "3", f"http://127.0.0.1:{self.http_port}{path}",
            timeout=10,
        )
        if result.returncode != 0:
            raise ConnectionError(f"{self.aet}: GET {path} failed ({result.returncode})")
        return json.loads(result.stdout)

    def peers(self) -> dict[str, dict[str, Any]]:
        """AET -> peer entry, as this node lists them."""
        return {p["aet"]: p for p in self.get_json("/api/peers")}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def pacsmesh_cli(*args: str) -> str:
    """Run a ``pacsmesh`` command (no network) and return its last output line."""
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"pacsmesh {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


def init_mesh(data_dir: Path, aet: str) -> None:
    pacsmesh_cli("mesh", "init", "--data-dir", str(data_dir), "--aet", aet)


def invite(data_dir: Path, *seeds: str, uses: int = 50, expires: str = "1h") -> str:
    """An invite token; seeds are always explicit here (never the machine's own address)."""
    seed_args = [a for s in seeds for a in ("--seed", s)] or ["--no-seed"]
    return pacsmesh_cli("mesh", "invite", "--data-dir", str(data_dir), "--uses", str(uses),
                        "--expires", expires, *seed_args)


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> float:
    """Poll until ``predicate()`` is truthy; return the seconds it took, or raise."""
    start = time.monotonic()
    last_error: Exception | None = None
    while time.monotonic() - start < timeout:
        try:
            if predicate():
                return time.monotonic() - start
        except (ConnectionError, ValueError, subprocess.TimeoutExpired) as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"condition not met in {timeout}s (last error: {last_error})")
