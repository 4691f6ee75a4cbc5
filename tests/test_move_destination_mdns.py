"""C-MOVE by AE title to a workstation found over mDNS, whose address then changes (DHCP):
after it announces itself again, moves reach it at its new address."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import Host, NamespacedNode, Network, netns_available, wait_for
from tests.support import one_file_per_instance, transfer_syntax

pytestmark = pytest.mark.skipif(
    netns_available() is not None, reason=f"multi-host tests: {netns_available()}"
)
VIEWER = "VIEWER"


@pytest.fixture
def network() -> Iterator[Network]:
    with Network() as net:
        yield net


def announce(host: Host, log: Path) -> subprocess.Popen[bytes]:
    return host.spawn([sys.executable, "-m", "tests.dicom_announcer", VIEWER, host.address,
                       "11112"], log)


def move_all(node: NamespacedNode) -> subprocess.CompletedProcess[str]:
    return node.host.run(
        "movescu", "-S", "-aem", VIEWER, "-aec", node.aet,
        "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
        "127.0.0.1", "11112", timeout=60,
    )


def test_move_follows_a_destination_whose_address_changed(
    network: Network, tmp_path: Path
) -> None:
    archive_host, viewer_host = network.add_host("archive"), network.add_host("viewer")
    node = NamespacedNode(archive_host, tmp_path / "node", "ARCHIVE",
                          ("--allowed-aet", "MOVESCU")).start()
    received = tmp_path / "received"
    received.mkdir()
    viewer_host.spawn(["storescp", "-aet", VIEWER, "-od", str(received), "11112"],
                      tmp_path / "storescp.log")
    announcer = announce(viewer_host, tmp_path / "announce1.log")
    try:
        files = [p for p in one_file_per_instance()
                 if transfer_syntax(p) in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")][:3]
        wait_for(lambda: node.host.run("echoscu", "127.0.0.1", "11112").returncode == 0, 30)
        stored = node.host.run("storescu", "-aec", node.aet, "127.0.0.1", "11112",
                               *map(str, files), timeout=60)
        assert stored.returncode == 0, stored.stderr

        # Found by its announcement alone: no --modality table names it.
        wait_for(lambda: move_all(node).returncode == 0 and len(list(received.iterdir())) >= 3,
                 30, interval=1.0)
        assert len(list(received.iterdir())) == len(files)

        # DHCP hands the viewer a new address; it announces itself again.
        announcer.terminate()
        announcer.wait(timeout=10)
        old = viewer_host.address
        viewer_host.change_address(old.rsplit(".", 1)[0] + ".77")
        for path in received.iterdir():
            path.unlink()
        announce(viewer_host, tmp_path / "announce2.log")
        wait_for(lambda: move_all(node).returncode == 0 and len(list(received.iterdir())) >= 3,
                 30, interval=1.0)
        assert len(list(received.iterdir())) == len(files)
        assert f"{old}" not in viewer_host.run("ip", "-4", "addr", "show", "eth0").stdout
    finally:
        node.stop()
