"""``pacsmesh retrieve``: pull studies from another PACS into this node's archive.

C-GET lands the instances in a temporary spool; from there they go to the running node
on this data dir with C-STORE on loopback (it owns the data dir: `import` refuses while
it runs), or straight into the data dir when no node runs. C-MOVE goes to the running
node itself, or, with no node, to a temporary storage SCP on ``--port`` feeding the
spool. Once in a member node, replication spreads the study like any other.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from node.config import NodeConfig, RemoteAE
from node.datadir import data_dir_in_use
from node.dicom.retrieve_scu import (
    GetUnsupported,
    RetrieveError,
    Selector,
    Study,
    find_studies,
    get_study,
    move_study,
)
from node.dicom.send_scu import Counts, Outgoing, send
from node.dicom.spool import Spool, TemporarySCP

log = logging.getLogger(__name__)
METHODS = ("auto", "get", "move")


@dataclass(frozen=True)
class PullRequest:
    remote: RemoteAE
    selector: Selector
    method: str = "auto"  # one of METHODS
    port: int | None = None  # temporary C-MOVE SCP when no node runs
    timeout: float = 30.0


@dataclass
class PullReport:
    studies: int
    counts: Counts  # what reached the archive, and what did not
    peer: Counts  # what the peer reported for its sub-operations
    methods: set[str]


class ProgressHooks:
    """What the caller shows: a total once known, one step per instance."""

    def __init__(self, total: Callable[[int | None], None], advance: Callable[[int], None]):
        self.total = total
        self.advance = advance


def local_node(config: NodeConfig) -> RemoteAE:
    host = config.bind if config.bind not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return RemoteAE(config.aet, host, config.dicom_port)


def pull(
    config: NodeConfig, request: PullRequest, progress: ProgressHooks,
    ingest: Callable[[list[Path]], Counts],
) -> PullReport:
    """Raises RetrieveError (nothing matches, the peer refuses) or AssociationFailed.
    ``ingest`` stores spooled files into the data dir when no node runs on it."""
    remote, aet = request.remote, config.aet
    studies = find_studies(remote, aet, request.selector, request.timeout)
    if not studies:
        what = (f"study {request.selector.study_uid}" if request.selector.study_uid
                else "the given patient ID")
        raise RetrieveError(f"{remote} holds no study matching {what}")
    known = [s.instances for s in studies]
    progress.total(sum(n for n in known if n is not None) if None not in known else None)
    running = data_dir_in_use(config.data_dir)
    peer = Counts()
    methods: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="pacsmesh-retrieve-") as tmp:
        spool = Spool(Path(tmp), on_receive=lambda: progress.advance(1))
        for study in studies:
            method, counts = _pull_study(config, request, study, spool, running, progress)
            methods.add(method)
            peer += counts
        if not len(spool):
            # Moved straight into the running node (or nothing came): the peer's word.
            return PullReport(len(studies), peer, peer, methods)
        stored = _store(config, spool.items, running, ingest)
    stored.failed += peer.failed
    return PullReport(len(studies), stored, peer, methods)


def _pull_study(
    config: NodeConfig, request: PullRequest, study: Study, spool: Spool, running: bool,
    progress: ProgressHooks,
) -> tuple[str, Counts]:
    remote, aet, timeout = request.remote, config.aet, request.timeout
    if request.method in ("auto", "get"):
        try:
            return "C-GET", get_study(remote, aet, study, spool, timeout)
        except GetUnsupported as exc:
            if request.method == "get":
                raise
            log.info("%s; falling back to C-MOVE", exc)
    done = [0]

    def on_pending(status: Dataset) -> None:
        now = sum(int(status.get(k) or 0) for k in (
            "NumberOfCompletedSuboperations", "NumberOfFailedSuboperations",
            "NumberOfWarningSuboperations"))
        progress.advance(max(0, now - done[0]))
        done[0] = max(done[0], now)

    if running:
        return "C-MOVE", move_study(remote, aet, study, aet, on_pending, timeout)
    if request.port is None:
        raise RetrieveError(
            f"{remote} needs C-MOVE and no node runs on {config.data_dir}: start the node, "
            f"or give --port for a temporary storage SCP (the peer must know {aet} there)"
        )
    try:
        scp = TemporarySCP(aet, "0.0.0.0", request.port, spool)
        scp.start()
    except OSError as exc:
        raise RetrieveError(f"cannot listen on port {request.port}: {exc.strerror}") from None
    try:
        # The spool advances the progress itself: the peer's pending counts would count
        # the same instances twice.
        return "C-MOVE", move_study(remote, aet, study, aet, lambda _s: None, timeout)
    finally:
        scp.stop()


def _store(config: NodeConfig, items: list[Outgoing], running: bool,
           ingest: Callable[[list[Path]], Counts]) -> Counts:
    if running:
        return send(local_node(config), config.aet, items)
    return ingest([item.path for item in items])
