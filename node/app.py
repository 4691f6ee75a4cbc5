"""Composition root: opens the data dir, reconciles, and starts DICOM and HTTP services.

Nothing else wires modules together; discovery and replication plug in here later.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from node.archive import Archive
from node.at_rest import ObjectKey
from node.at_rest_keys import AtRestKeyError, load_key
from node.audit import Action, AuditEvent, AuditTrail, Outcome
from node.config import NodeConfig
from node.datadir import INDEX_FILE, StartupError, lock_data_dir
from node.dicom.claims import MemberIdentity, Members
from node.dicom.mesh_seam import MeshSeam
from node.dicom.observed import LateObserver
from node.dicom.patches import UnsupportedLibrary
from node.dicom.scp import DicomServer, configure_pynetdicom
from node.dicom.tls import DicomTlsError, server_context
from node.hl7.intake import applier
from node.hl7.listener import Hl7Listener, ListenerSettings
from node.index import Index
from node.patients.events import PatientEvent, PatientKey
from node.patients.store import PatientStore, index_knows
from node.reconcile import ReconcileReport, recover, retire_forever, retire_intents
from node.scrub import Scrubber
from node.storage import Storage
from node.tasks import cancel_and_wait
from node.worklist.store import WorklistStore
from replication.catalog_store import CatalogStore

# The HTTP and mesh stacks (aiohttp, discovery, replication) are imported in Node.start
# once the DICOM port is open, not here: they are most of what start-up imports, and a
# modality's first C-ECHO needs none of them (benchmarks/startup.py).
if TYPE_CHECKING:
    from aiohttp import web

    from discovery.service import Discovery
    from node.identity import NodeIdentity
    from node.observability import Observability
    from replication.service import Replicator
    from replication.tombstone_store import StudyDeletion

log = logging.getLogger(__name__)
# What Node.start imports once the DICOM port is open (the names it then takes from them).
_MESH_HALF = (
    "aiohttp.web", "discovery.http", "discovery.membership", "discovery.service",
    "node.http.access_routes", "node.http.auth", "node.http.dicomweb", "node.http.serving",
    "node.http.api", "node.identity", "replication.antientropy",
    "replication.commitment_copies", "replication.deletion",
    "replication.durability", "replication.feed", "replication.fetch", "replication.http",
    "replication.outbox_store", "replication.owned", "replication.remote_find",
    "replication.retrieve", "replication.service", "replication.transfer",
    "node.http.media_routes", "node.http.session", "node.http.session_store",
    "node.http.viewer", "node.http.dicomweb.metadata_cache", "replication.patient_sync",
    "replication.order_sync",
    "replication.viewer_share", "node.observability", "replication.member_health",
    "replication.mesh_view",
)


def _import_mesh_half() -> None:
    for name in _MESH_HALF:
        importlib.import_module(name)


def at_rest_key(config: NodeConfig) -> ObjectKey | None:
    """The data dir's at-rest key (created if encryption is asked for the first time)."""
    try:
        return load_key(config.data_dir, config.encrypt_at_rest, config.at_rest_passphrase)
    except AtRestKeyError as exc:
        raise StartupError(str(exc)) from None


def open_storage(config: NodeConfig) -> Storage:
    return Storage(config.data_dir, at_rest_key(config), seal_new=config.encrypt_at_rest)


async def open_archive(
    data_dir: Path, storage: Storage | None = None
) -> tuple[Archive, ReconcileReport]:
    """Open (creating if needed) and recover the archive in ``data_dir``: what the crash
    journal names, not the whole archive (node/reconcile.py). Close with
    :func:`close_archive`."""
    storage = storage or Storage(data_dir)
    try:
        # Owner-only (the umask: or group-readable) from its first byte; SQLite gives
        # -wal and -shm the same mode.
        os.close(os.open(data_dir / INDEX_FILE, os.O_WRONLY | os.O_CREAT, 0o640))
        index = await Index.open(data_dir / INDEX_FILE)
    except Exception as exc:
        raise StartupError(f"cannot open index {data_dir / INDEX_FILE}: {exc}") from None
    index.mesh_view = CatalogStore(index.db)  # C-FIND and retrieves over the mesh catalog
    try:
        report = await recover(storage, index)
    except BaseException:
        await index.close()
        raise
    return Archive(storage, index), report


async def close_archive(archive: Archive) -> None:
    """Close the index once the journal's intents are retired: after a clean stop, the
    next start-up has nothing to check."""
    try:
        await retire_intents(archive.storage, archive.index)
    except Exception as exc:  # the next start-up checks them instead
        log.warning("crash-journal intents left for the next start-up: %s", exc)
    await archive.index.close()


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.archive: Archive | None = None
        self.dicom: DicomServer | None = None
        self.discovery: Discovery | None = None
        self.replicator: Replicator | None = None
        self.scrubber: Scrubber | None = None
        self.audit: AuditTrail | None = None
        self.observability: Observability | None = None
        self.patients: PatientStore | None = None
        self.hl7: Hl7Listener | None = None
        self.worklist: WorklistStore | None = None
        self._http: web.AppRunner | None = None
        self._lock: IO[str] | None = None
        self._retiring: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.config
        self._lock = lock_data_dir(cfg.data_dir, cfg.data_dir_gid)
        try:
            self.archive, _ = await open_archive(cfg.data_dir, open_storage(cfg))
            self._retiring = asyncio.create_task(
                retire_forever(self.archive.storage, self.archive.index), name="retire")
            audit = self.audit = AuditTrail(self.archive.index)
            audit.start()
            self.archive.on_damaged = _audit_damage(audit)
            self.archive.on_refused = audit_refusal(audit)
            patients = self.patients = PatientStore(self.archive.index.db,
                                                    index_knows(self.archive.index))
            await patients.open()
            self.archive.index.patients = patients
            patients.on_change = _patients_changed(audit, self.archive.index)
            worklist = self.worklist = WorklistStore(self.archive.index.db)
            await worklist.open()
            seam = MeshSeam()
            # Counts of what the port serves before the metrics registry loads with the
            # HTTP half are kept and handed to it then.
            dimse_observer = LateObserver()
            self._start_dicom(audit, seam, dimse_observer)
            assert self.dicom is not None
            await self.dicom.workflow.start()
            # The DICOM port is open and stores are taken; what follows is the HTTP and
            # mesh half, imported only now, on a thread: imported here, they would hold
            # the loop, and every store with it, until they were all loaded. Each store
            # meanwhile is in the change feed, which the replicator reads from its
            # checkpoint once started: copies owed are counted (Durability) and sent as
            # for any other store.
            await asyncio.to_thread(_import_mesh_half)
            from aiohttp import web

            from discovery.http import routes as discovery_routes
            from discovery.service import DiscoveryError
            from node.http import (
                access_routes,
                auth,
                dicomweb,
                media_routes,
                serving,
                session,
                viewer,
            )
            from node.http.api import make_app
            from node.http.session_store import SessionStore
            from node.observability import assemble
            from replication.antientropy import routes as anti_entropy_routes
            from replication.commitment_copies import MeshCopies
            from replication.deletion import routes as deletion_routes
            from replication.durability import Durability
            from replication.feed import routes as feed_routes
            from replication.fetch import Fetcher
            from replication.http import member_aets
            from replication.http import routes as replication_http_routes
            from replication.member_health import MemberHealth
            from replication.member_health import routes as member_health_routes
            from replication.mesh_view import MeshBridge
            from replication.order_sync import routes as order_event_routes
            from replication.outbox_store import OutboxStore
            from replication.owned import OwnedIndex
            from replication.patient_sync import routes as patient_event_routes
            from replication.remote_find import routes as remote_find_routes
            from replication.retrieve import MeshRetrieve
            from replication.service import ReplicationSettings, Replicator
            from replication.transfer import Receipts
            from replication.transfer import routes as transfer_routes
            from replication.viewer_share import routes as viewer_share_routes

            identity = self._identity()
            self.discovery = self._make_discovery(self.archive.index, identity)
            self.discovery.on_join = _audit_join(audit)
            self.discovery.on_refusal = _audit_mesh_refusal(audit)
            self.discovery.add_mesh_routes(feed_routes(self.archive.index))
            receipts = Receipts()
            self.discovery.add_mesh_routes(transfer_routes(self.archive, receipts))
            self.discovery.add_mesh_routes(deletion_routes(self.archive.index))
            self.discovery.add_mesh_routes(patient_event_routes(patients))
            self.discovery.add_mesh_routes(order_event_routes(worklist))
            self.discovery.add_mesh_routes(remote_find_routes(self.archive.index))
            self.discovery.add_mesh_routes(viewer_share_routes(cfg.data_dir))
            fetcher = Fetcher(self.archive, self.discovery, cfg.cache_bytes, lambda: cfg.replicas)
            owned = OwnedIndex(self.archive.index)  # holdings, kept current incrementally
            self.discovery.add_mesh_routes(
                anti_entropy_routes(owned, self.discovery, lambda: cfg.replicas)
            )
            replicator = self.replicator = Replicator(
                self.archive, self.discovery, ReplicationSettings(cfg.replicas, cfg.hint_after),
                owned=owned, patients=patients, orders=worklist,
            )
            replicator.deletions.on_deleted = _audit_deletion(audit)
            discovery = self.discovery
            durability = Durability(self.archive.index, discovery, lambda: cfg.replicas,
                                    replicator.acknowledged)

            async def replication_status() -> dict[str, Any]:
                # Replaces the index's outbox-only count: pending changes and too few
                # members count as owed too (replication.durability).
                debt = await durability.owed()
                return {"outbox_depth": debt.copies, "under_replicated": len(debt.studies),
                        "replication": {"peers": await replicator.peers_status(),
                                        "received": receipts.as_json(),
                                        **debt.as_json(member_aets(discovery))},
                        "retrieve": fetcher.stats.as_json()}

            obs = self.observability = assemble(cfg, self.archive, identity.node_id, MeshBridge(
                self.archive.index, discovery, replicator, durability, fetcher.stats,
                MemberHealth(discovery)), identity.cert_path, audit)
            discovery.add_mesh_routes(member_health_routes(obs.health.own_facts))
            dimse_observer.attach(obs.metrics.dimse)
            mesh_retrieve = MeshRetrieve(self.discovery, fetcher)
            sessions = SessionStore(self.archive.index.db)
            authenticator = auth.Authenticator(self.archive.index, cfg.http_auth, sessions)
            app = make_app(
                self.archive.index, cfg.aet, identity.node_id,
                [*discovery_routes(self.discovery),
                 *replication_http_routes(self.archive.index, self.discovery, durability),
                 *access_routes.routes(self.archive, audit, cfg.http_max_body),
                 *media_routes.routes(self.archive, audit, mesh_retrieve, cfg.aet,
                                      cfg.http_max_body),
                 *dicomweb.routes(dicomweb.DicomWeb(
                     self.archive, audit, mesh_retrieve, cfg.query_scope == "mesh",
                     cfg.http_max_body)),
                 *obs.routes(),
                 *session.routes(self.archive.index, sessions, audit),
                 # Last: the viewer answers only what no route above did.
                 *viewer.routes(cfg.data_dir, cfg.aet, authenticator)],
                [replication_status, obs.monitoring.status_part],
                [auth.middleware(authenticator, audit), obs.monitoring.middleware()],
                backlog=OutboxStore(self.archive.index.db),
            )
            serving.harden(app)
            # keepalive_timeout also bounds slow request headers (node/http/serving.py).
            self._http = web.AppRunner(app, access_log=None,
                                       keepalive_timeout=cfg.http_header_timeout)
            await self._http.setup()
            try:
                await web.TCPSite(self._http, cfg.bind, cfg.http_port,
                                  ssl_context=self._http_tls(identity)).start()
            except OSError as exc:
                raise StartupError(
                    f"cannot listen for HTTP on {cfg.bind}:{cfg.http_port}: {exc.strerror}"
                ) from None
            if cfg.hl7_port is not None:
                self.hl7 = Hl7Listener(
                    ListenerSettings(cfg.bind, cfg.hl7_port, self._hl7_tls(identity)),
                    applier(patients, identity.node_id, worklist))
                try:
                    await self.hl7.start()
                except OSError as exc:
                    raise StartupError(
                        f"cannot listen for HL7 on {cfg.bind}:{cfg.hl7_port}: {exc.strerror}"
                    ) from None
            try:
                await self.discovery.start()
            except DiscoveryError as exc:
                raise StartupError(str(exc)) from None
            await self.replicator.start()
            # Only now, with the roster loaded and the replicator's acknowledgements
            # known, may the DICOM side count copies elsewhere: earlier, a commitment
            # judged on an unloaded roster would count this node's copy as enough.
            seam.attach(self.discovery.dicom_destination, mesh_retrieve,
                        self.discovery.known_aets, _member_identities(self.discovery),
                        MeshCopies(CatalogStore(self.archive.index.db), discovery,
                                   lambda: cfg.replicas, replicator.acknowledged))
            self.scrubber = Scrubber(self.archive, data_dir_gid=cfg.data_dir_gid)
            await self.scrubber.start()
            obs.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "PACSmesh node %s: DICOM on %s:%d, %s on %s:%d, data in %s",
            cfg.aet, cfg.bind, cfg.dicom_port, "HTTP" if cfg.http_tls == "off" else "HTTPS",
            cfg.bind, cfg.http_port, cfg.data_dir,
        )

    def _start_dicom(self, audit: AuditTrail, seam: MeshSeam,
                     observer: LateObserver) -> None:
        """Open the DICOM port, answering for what the mesh knows through ``seam``."""
        cfg = self.config
        assert self.archive is not None
        try:
            configure_pynetdicom(debug=cfg.log_level == "DEBUG")
        except UnsupportedLibrary as exc:
            raise StartupError(str(exc)) from None
        self.dicom = DicomServer(cfg, self.archive, seam.resolve, seam, audit, seam.aets,
                                 tls=self._dicom_tls(), members=seam.members, copies=seam,
                                 observer=observer, worklist=self.worklist)
        try:
            self.dicom.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for DICOM on {cfg.bind}:{cfg.dicom_port}: {exc.strerror}"
            ) from None

    def _dicom_tls(self) -> ssl.SSLContext | None:
        if not self.config.dicom_tls:
            return None
        # Before the mesh half loads the identity: TLS on the port needs it first.
        return self._server_tls(self._identity())

    def _hl7_tls(self, identity: NodeIdentity) -> ssl.SSLContext | None:
        # MLLP over TLS: the same certificate the node shows on DIMSE.
        return self._server_tls(identity) if self.config.hl7_tls else None

    def _server_tls(self, identity: NodeIdentity) -> ssl.SSLContext:
        cfg = self.config
        try:
            return server_context(cfg.dicom_tls_cert or identity.cert_path,
                                  cfg.dicom_tls_key or identity.key_path)
        except DicomTlsError as exc:
            raise StartupError(str(exc)) from None

    def _http_tls(self, identity: NodeIdentity) -> ssl.SSLContext | None:
        from node.http import serving

        cfg = self.config
        if cfg.http_tls == "off":
            return None
        try:
            return serving.tls_context(cfg.http_tls_cert or identity.cert_path,
                                       cfg.http_tls_key or identity.key_path)
        except serving.HttpTlsError as exc:
            raise StartupError(str(exc)) from None

    def _identity(self) -> NodeIdentity:
        from node.identity import IdentityError, load_or_create_identity

        try:
            return load_or_create_identity(self.config.data_dir, self.config.aet)
        except IdentityError as exc:
            raise StartupError(str(exc)) from None

    def _make_discovery(self, index: Index, identity: NodeIdentity) -> Discovery:
        from discovery.membership import MembershipStore
        from discovery.service import Discovery, DiscoverySettings, PeerStore

        cfg = self.config

        async def load() -> list[dict]:
            return list((await index.load_state("peers")).values())

        async def save(node_id: str, peer: dict) -> None:
            await index.save_state("peers", node_id, peer)

        settings = DiscoverySettings(
            identity=identity, aet=cfg.aet, mesh_port=cfg.mesh_port, dicom_port=cfg.dicom_port,
            device_type=cfg.device_type, mdns=cfg.mdns, bind=cfg.bind,
            interfaces=cfg.interfaces, static_peers=cfg.peers, join_token=cfg.join,
            dicom_tls=cfg.dicom_tls,
        )
        return Discovery(settings, MembershipStore(cfg.data_dir), PeerStore(load, save))

    async def stop(self) -> None:
        if self.observability is not None:
            await self.observability.stop()
            self.observability = None
        if self.hl7 is not None:
            await self.hl7.stop()
            self.hl7 = None
        if self.scrubber is not None:
            await self.scrubber.stop()
            self.scrubber = None
        if self.replicator is not None:
            await self.replicator.stop()
            self.replicator = None
        if self.discovery is not None:
            await self.discovery.stop()
            self.discovery = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        if self.dicom is not None:
            await self.dicom.workflow.stop()
            # Handler threads may be waiting on this loop: stop them off the loop.
            await asyncio.to_thread(self.dicom.stop)
            self.dicom = None
        if self.audit is not None:
            # Last before the index closes: what the services above did is all written.
            await self.audit.stop()
            self.audit = None
        await cancel_and_wait(self._retiring)
        self._retiring = None
        if self.archive is not None:
            await close_archive(self.archive)
            self.archive = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _member_identities(discovery: Discovery) -> Members:
    """The seam for the DICOM side's member check: discovery's roster and peer table."""
    def members() -> list[MemberIdentity]:
        return [MemberIdentity(aet, node_id, frozenset(addresses))
                for aet, node_id, addresses in discovery.member_endpoints()]
    return members


def _audit_join(audit: AuditTrail) -> Callable[[bool, str, str, str, str], None]:
    def joined(admitted: bool, node_id: str, aet: str, address: str, why: str) -> None:
        audit.record(AuditEvent(
            action=Action.JOIN if admitted else Action.REFUSAL,
            outcome=Outcome.SUCCESS if admitted else Outcome.REFUSED,
            calling_aet=aet, node_id=node_id, address=address, detail=f"mesh join: {why}"))
    return joined


def audit_refusal(audit: AuditTrail) -> Callable[[str, str], None]:
    """Archive.on_refused: a received object refused as incomplete or ill-formed."""
    def refused(source: str, why: str) -> None:
        audit.record(AuditEvent(
            action=Action.REFUSAL, outcome=Outcome.REFUSED, calling_aet=source[:64],
            detail=f"instance refused: {why}"))
    return refused


def _audit_mesh_refusal(audit: AuditTrail) -> Callable[[str, str, str], None]:
    def refused(address: str, node_id: str, why: str) -> None:
        audit.record(AuditEvent(
            action=Action.REFUSAL, outcome=Outcome.REFUSED, node_id=node_id,
            address=address, detail=f"mesh API: {why}"))
    return refused


def _audit_damage(audit: AuditTrail) -> Callable[[str], None]:
    def damaged(sha256: str) -> None:
        audit.record(AuditEvent(
            action=Action.INTEGRITY, outcome=Outcome.SERIOUS_FAILURE,
            detail=f"object {sha256} failed its check: quarantined, to be fetched again"))
    return damaged


def _patients_changed(audit: AuditTrail, index: Index) -> Callable[
        [set[PatientKey], list[PatientEvent]], Awaitable[None]]:
    async def changed(keys: set[PatientKey], events: list[PatientEvent]) -> None:
        # Imported here: the HTTP half is loaded after the DICOM port opens (Node.start).
        from node.http.dicomweb.metadata_cache import invalidate as invalidate_metadata

        # WADO-RS metadata kept ready holds the identity it was built with.
        ids = sorted({k.id for k in keys})
        if ids:
            rows = await index.db.fetchall(
                f"SELECT DISTINCT study_uid FROM {index.stored_tables().studies}"
                f" WHERE patient_id IN ({', '.join('?' * len(ids))})", ids)
            for row in rows:
                invalidate_metadata(row["study_uid"])
        # The IDs are the audit's to keep (the audit trail is where patient IDs go).
        messages = ", ".join(f"{e.kind} {e.event_id}" for e in events[:5])
        more = f" and {len(events) - 5} more" if len(events) > 5 else ""
        for key in sorted(keys):
            audit.record(AuditEvent(
                action=Action.PATIENT_RECORD, patient_id=key.id,
                node_id=events[0].origin if len(events) == 1 else "",
                detail=f"patient identity changed by HL7 {messages}{more}"))
    return changed


def _audit_deletion(audit: AuditTrail) -> Callable[[str, str, str, StudyDeletion], None]:
    def deleted(study_uid: str, by: str, source: str, removed: StudyDeletion) -> None:
        audit.record(AuditEvent(
            action=Action.DELETION, node_id=by, study_uid=study_uid,
            detail=f"tombstone from {source}: {removed.instances} instance(s), "
                   f"{removed.bytes} bytes removed here"))
    return deleted


async def run_node(config: NodeConfig) -> None:
    """Run until SIGINT or SIGTERM."""
    node = Node(config)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping (pid %d)", os.getpid())
        await node.stop()
