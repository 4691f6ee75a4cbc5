"""The DIMSE side of a node: Verification, Storage, Query/Retrieve FIND, GET and MOVE SCP.

pynetdicom runs each association on its own threads; the handlers here block those
threads, never the event loop, and hand index work to the loop through the Archive.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    evt,
)
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from node.archive import Archive, IngestResult, IngestStatus
from node.audit import Action, AuditTrail, Outcome, store_outcome
from node.commitment import DurableCopies
from node.config import NodeConfig
from node.dicom import patches
from node.dicom.access import AccessPolicy
from node.dicom.admission import Admission, AdmissionLimits
from node.dicom.audit_hooks import NOT_AUTHORIZED, DicomAudit
from node.dicom.claims import KnownPeers, Members
from node.dicom.encoding import encode_file_meta
from node.dicom.find_encoding import EncodedIdentifier, layout_for
from node.dicom.gate import AssociationGate
from node.dicom.observed import Observer, timed, timed_stream
from node.dicom.patches import RETIRED_IMAGE_STORAGE
from node.dicom.reactor import start_server
from node.dicom.retrieve_scp import (
    MeshSource,
    NodeAE,
    RetrieveService,
)
from node.dicom.statuses import (
    CANCEL,
    CANNOT_UNDERSTAND,
    ELEMENTS_DISCARDED,
    IDENTIFIER_MISMATCH,
    OUT_OF_RESOURCES,
    PENDING,
    PROCESSING_FAILURE,
    SUCCESS,
    calling_aet,
    exact_key,
    model_root,
    status_dataset,
)
from node.dicom.workflow import WORKFLOW_CLASSES, Workflow
from node.dicom.worklist_scp import MODALITY_WORKLIST_FIND
from node.dicom_header import InvalidDataset
from node.dicom_validate import InvalidUID
from node.index import IndexFailure, IndexFull
from node.query import QueryError, parse_identifier, response_identifier
from node.storage import StorageError, StorageFull
from node.worklist.store import WorklistStore

log = logging.getLogger(__name__)

_QR_CLASSES = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)
# pynetdicom accepts, from a context offering several syntaxes, the first one in this
# list. Uncompressed first: for a C-GET the same context carries every instance of the
# class, and any instance can be sent uncompressed (decompressing if stored compressed),
# while a compressed choice would fail every instance stored otherwise. Requesters that
# offer each syntax in its own context (as pynetdicom does) get stored bytes untouched.
_PLAIN_FIRST = [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian]
STORAGE_SYNTAXES = _PLAIN_FIRST + [ts for ts in ALL_TRANSFER_SYNTAXES if ts not in _PLAIN_FIRST]
def storage_classes() -> list[str]:
    """Every storage SOP class this node takes: pynetdicom's, and retired image ones."""
    return [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts
            if cx.abstract_syntax] + list(RETIRED_IMAGE_STORAGE)


def configure_pynetdicom(debug: bool) -> None:
    """Process-wide pynetdicom settings (node/dicom/patches.py, which checks the pinned
    versions first) and its log level."""
    patches.apply()
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if debug else logging.WARNING)


Resolver = Callable[[str], "tuple[str, int] | None"]


class DicomServer(RetrieveService):
    def __init__(
        self, config: NodeConfig, archive: Archive, discovered: Resolver | None = None,
        mesh: MeshSource | None = None, audit: AuditTrail | None = None,
        mesh_aets: Callable[[], Iterable[str]] | None = None,
        tls: ssl.SSLContext | None = None, members: Members | None = None,
        copies: DurableCopies | None = None,
        observer: Observer | None = None,
        worklist: WorklistStore | None = None,
    ) -> None:
        """``discovered`` resolves AE titles not in the configured table (e.g. mDNS);
        ``mesh`` answers for studies held elsewhere (none: this node alone);
        ``mesh_aets`` gives the AE titles of mesh members and discovered devices; ``tls``
        makes the DICOM port speak TLS; ``members`` gives the mesh members' titles, node
        ids and addresses, so that a member's title is believed only from the member;
        ``copies`` counts durable copies in the mesh for storage commitment;
        ``observer`` counts and times each request (node.metrics); ``worklist`` holds
        the items the Modality Worklist serves."""
        self.config = config
        self.archive = archive
        self._discovered = discovered
        self.mesh = mesh
        self.tls = tls
        policy = AccessPolicy.build(config.access, config.allowed_aets,
                                    [m.aet for m in config.modalities], mesh_aets)
        self.audit = DicomAudit(audit, policy)
        self._trail = audit
        self._members = members
        self._observer = observer
        self.gate: AssociationGate | None = None
        self.workflow = Workflow(config, archive, self.audit, self.resolve_destination, copies,
                                 worklist=worklist)
        self.ae = self._build_ae()
        self._server: ThreadedAssociationServer | None = None

    def _build_ae(self) -> AE:
        ae = NodeAE(ae_title=self.config.aet)
        ae.maximum_pdu_size = 0  # receive whole P-DATA in one go: the fast path
        limits = self.config.dicom_limits
        # The gate (node.dicom.gate) limits associations from the accept on. pynetdicom's
        # own count, made at the request, includes threads of connections the gate has
        # already let go: it only stands behind the gate.
        ae.maximum_associations = 4 * limits.max_associations + 16
        ae.network_timeout = 60
        # A connection whose association request is not complete this long after the
        # accept is closed (the socket enforces it: reactor.BulkReceiveSocket).
        ae.acse_timeout = limits.acse_timeout
        ae.dimse_timeout = 60
        ae.add_supported_context(Verification)
        for uid in storage_classes():
            # Both roles, so C-GET requesters can negotiate SCP role for sub-operations.
            ae.add_supported_context(uid, STORAGE_SYNTAXES, scu_role=True, scp_role=True)
        for uid in (*_QR_CLASSES, *WORKFLOW_CLASSES):
            ae.add_supported_context(uid)
        return ae

    def _make_gate(self) -> AssociationGate:
        limits = self.config.dicom_limits
        cfg = self.config
        own = frozenset() if cfg.bind in ("0.0.0.0", "::") else frozenset({cfg.bind})
        known = KnownPeers(cfg.aet, own, {m.aet: _addresses_of(m.host) for m in cfg.modalities},
                           self._members or (lambda: ()))
        admission = Admission(AdmissionLimits(
            limits.max_associations, limits.max_associations_per_address,
            limits.reserved_associations))
        return AssociationGate(admission, known, self._trail)

    def start(self) -> None:
        gate = self.gate = self._make_gate()
        handlers = [
            *gate.handlers(),
            *self._services(),
            *self.workflow.handlers(),
            *self.audit.handlers(),
        ]
        self._server = start_server(
            self.ae, (self.config.bind, self.config.dicom_port), handlers, self.tls,
            self.audit.refuse_retrieve, gate.on_connect, gate.admission.release,
            self.config.dicom_limits.pdu_timeout, gate.on_timeout,
        )
        # Accepted sockets inherit this on Linux. Without it every response waits out the
        # peer's delayed ACK (~40 ms per C-STORE with Nagle's algorithm on both sides).
        self._server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _services(self) -> list[tuple[Any, Any]]:
        plain = [(evt.EVT_C_ECHO, "C-ECHO", self.on_echo),
                 (evt.EVT_C_STORE, "C-STORE", self.on_store)]
        streams = [(evt.EVT_C_FIND, "C-FIND", self.on_find), (evt.EVT_C_GET, "C-GET", self.on_get),
                   (evt.EVT_C_MOVE, "C-MOVE", self.on_move)]
        obs = self._observer
        if obs is None:
            return [(e, h) for e, _, h in [*plain, *streams]]
        return [*((e, timed(obs, name, h)) for e, name, h in plain),
                *((e, timed_stream(obs, name, h)) for e, name, h in streams)]

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()

    def resolve_destination(self, aet: str) -> tuple[str, int] | None:
        """The configured table first, then devices discovered on the network."""
        configured = self.config.modality(aet)
        if configured is not None:
            return configured.host, configured.port
        return self._discovered(aet) if self._discovered is not None else None

    # --- Verification and Storage -------------------------------------------------------

    def on_echo(self, event: Event) -> int:
        return SUCCESS

    def on_store(self, event: Event) -> Dataset | int:
        answer = self._store(event)
        return answer if isinstance(answer, Dataset | int) else self._stored(event, answer)

    def _store(self, event: Event) -> Dataset | IngestResult:
        source = calling_aet(event)
        try:
            data = part10_bytes(event)
        except Exception as exc:
            log.warning("C-STORE from %s: unreadable data set: %s", source, exc)
            return self._store_failed(event, CANNOT_UNDERSTAND, "Unreadable data set")
        try:
            return self.archive.ingest(data, source)
        except InvalidDataset as exc:
            log.warning("C-STORE from %s refused: %s", source, exc)
            # A bad identifying UID: the data set does not match what its SOP class
            # requires; anything cut short or garbled: it cannot be understood.
            code = IDENTIFIER_MISMATCH if isinstance(exc, InvalidUID) else CANNOT_UNDERSTAND
            return self._store_failed(event, code, str(exc))
        except (StorageFull, IndexFull) as exc:
            log.error("C-STORE from %s refused, out of space: %s", source, exc)
            return self._store_failed(event, OUT_OF_RESOURCES, "Archive storage is full")
        except (StorageError, IndexFailure) as exc:
            log.error("C-STORE from %s failed: %s", source, exc)
            return self._store_failed(event, PROCESSING_FAILURE,
                                      "Archive could not record the instance")

    def _store_failed(self, event: Event, code: int, comment: str) -> Dataset:
        self.audit.stored(event, "", "", Outcome.SERIOUS_FAILURE)
        return status_dataset(code, comment)

    def _stored(self, event: Event, result: IngestResult) -> Dataset | int:
        keys = result.keys
        self.audit.stored(event, keys.patient_id, keys.study_instance_uid,
                          store_outcome(result.status))
        if result.status is IngestStatus.CONFLICT:
            return status_dataset(
                ELEMENTS_DISCARDED, "Duplicate SOP Instance UID, different data: first kept"
            )
        if result.status is IngestStatus.TOMBSTONED:
            # The admin deleted the study mesh-wide; taking it back here would bring it
            # back everywhere. A final failure, so the modality does not retry forever.
            log.warning("C-STORE from %s refused: its study was deleted from the mesh",
                        calling_aet(event))
            return status_dataset(NOT_AUTHORIZED, "Study was deleted from the archive by its admin")
        return SUCCESS

    # --- Query ---------------------------------------------------------------------------

    def on_find(self, event: Event) -> Iterator[
            tuple[int | Dataset, Dataset | EncodedIdentifier | None]]:
        if str(event.request.AffectedSOPClassUID) == MODALITY_WORKLIST_FIND:
            yield from self.workflow.worklist.on_find(event)
            return
        source = calling_aet(event)
        try:
            root = model_root(event.request.AffectedSOPClassUID)
            query = parse_identifier(event.identifier, root)
            over_mesh = self.config.query_scope == "mesh" and self.mesh is not None
            if over_mesh and query.level == "IMAGE" and self.mesh is not None:
                rows = self.archive.on_loop(self.mesh.image_rows(query, event.identifier, root))
            else:
                rows = self.archive.on_loop(self.archive.index.find(query, mesh=over_mesh))
        except QueryError as exc:
            log.warning("C-FIND from %s refused: %s", source, exc)
            yield status_dataset(IDENTIFIER_MISMATCH, str(exc)), None
            return
        except Exception as exc:
            log.error("C-FIND from %s failed: %s: %s", source, type(exc).__name__, exc)
            yield status_dataset(CANNOT_UNDERSTAND, "Unable to process the query"), None
            return
        log.info("C-FIND from %s at %s level: %d match(es)", source, query.level, len(rows))
        self.audit.record(event, Action.QUERY, Outcome.SUCCESS,
                          patient_id=exact_key(event.identifier, "PatientID"),
                          study_uid=exact_key(event.identifier, "StudyInstanceUID"),
                          detail=f"{query.level} level, {len(rows)} match(es)")
        layout = layout_for(query, self.config.aet, event.context.transfer_syntax)
        for row in rows:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, (response_identifier(query, row, self.config.aet)
                            if layout is None else layout.identifier(row))

def _addresses_of(host: str) -> frozenset[str]:
    """The IP addresses of a configured modality's host (none if it does not resolve:
    the modality then works as before, only without the reserved slots)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        log.warning("modality host %s does not resolve (%s): no reserved DICOM slots for it",
                    host, exc)
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


def part10_bytes(event: Event) -> bytes:
    """``event.encoded_dataset(include_meta=True)``, the same bytes made faster."""
    request = event.request
    meta = encode_file_meta(
        str(request.AffectedSOPClassUID or ""), str(request.AffectedSOPInstanceUID or ""),
        str(event.context.transfer_syntax),
    )
    with request.DataSet.getbuffer() as received:  # no copy before the join
        return b"".join((meta, received))

