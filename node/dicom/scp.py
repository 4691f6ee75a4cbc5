"""The DIMSE side of a node: Verification, Storage, Query/Retrieve FIND, GET and MOVE SCP.

pynetdicom runs each association on its own threads; the handlers here block those
threads, never the event loop, and hand index work to the loop through the Archive.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, Protocol

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
    build_context,
    evt,
)
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
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
from node.config import NodeConfig
from node.dicom import patches
from node.dicom.access import AccessPolicy
from node.dicom.admission import Admission, AdmissionLimits
from node.dicom.audit_hooks import NOT_AUTHORIZED, DicomAudit, requestor
from node.dicom.claims import KnownPeers, Members
from node.dicom.encoding import encode_file_meta
from node.dicom.find_encoding import layout_for
from node.dicom.gate import AssociationGate
from node.dicom.patches import RETIRED_IMAGE_STORAGE
from node.dicom.reactor import start_server
from node.dicom_header import InvalidDataset
from node.dicom_validate import InvalidUID
from node.index import IndexFailure, IndexFull, StoredInstance
from node.query import Query, QueryError, parse_identifier, response_identifier
from node.storage import PlainFile, StorageError, StorageFull, TamperedObject
from node.transcode import TranscodeError, choose_plan, prepare

log = logging.getLogger(__name__)

# Statuses (PS3.4 Annex B and C)
SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
ELEMENTS_DISCARDED = 0xB006
IDENTIFIER_MISMATCH = 0xA900
FIND_OUT_OF_RESOURCES = 0xA700
MOVE_DESTINATION_UNKNOWN = 0xA801

_PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
}
_QR_CLASSES = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)
MAX_REQUESTED_CONTEXTS = 128
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


def _status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def _model_root(sop_class_uid: str) -> str:
    return "PATIENT" if sop_class_uid in _PATIENT_ROOT else "STUDY"


def _calling_aet(event: Event) -> str:
    return requestor(event.assoc)[0]


Resolver = Callable[[str], "tuple[str, int] | None"]


class Fetching(Protocol):
    """The instances of one retrieve that other members hold, arriving in order."""

    async def take(self, sop_uid: str) -> None: ...

    async def close(self) -> None: ...


class MeshSource(Protocol):
    """What the mesh answers for what this node does not hold (replication.retrieve)."""

    async def image_rows(
        self, query: Query, identifier: Dataset, root: str
    ) -> list[dict[str, Any]]: ...

    async def start(self, instances: list[StoredInstance]) -> Fetching: ...

    async def used_locally(self, sop_uids: list[str]) -> None: ...

    async def enforce_budget(self, keep: Iterable[str] = ()) -> None: ...


class DicomServer:
    def __init__(
        self, config: NodeConfig, archive: Archive, discovered: Resolver | None = None,
        mesh: MeshSource | None = None, audit: AuditTrail | None = None,
        mesh_aets: Callable[[], Iterable[str]] | None = None,
        tls: ssl.SSLContext | None = None, members: Members | None = None,
    ) -> None:
        """``discovered`` resolves AE titles not in the configured table (e.g. mDNS);
        ``mesh`` answers for studies held elsewhere (none: this node alone);
        ``mesh_aets`` gives the AE titles of mesh members and discovered devices; ``tls``
        makes the DICOM port speak TLS; ``members`` gives the mesh members' titles, node
        ids and addresses, so that a member's title is believed only from the member."""
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
        self.gate: AssociationGate | None = None
        self.ae = self._build_ae()
        self._server: ThreadedAssociationServer | None = None

    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.config.aet)
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
        for uid in _QR_CLASSES:
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
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_C_MOVE, self.on_move),
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
        source = _calling_aet(event)
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
        return _status(code, comment)

    def _stored(self, event: Event, result: IngestResult) -> Dataset | int:
        keys = result.keys
        self.audit.stored(event, keys.patient_id, keys.study_instance_uid,
                          store_outcome(result.status))
        if result.status is IngestStatus.CONFLICT:
            return _status(
                ELEMENTS_DISCARDED, "Duplicate SOP Instance UID, different data: first kept"
            )
        if result.status is IngestStatus.TOMBSTONED:
            # The admin deleted the study mesh-wide; taking it back here would bring it
            # back everywhere. A final failure, so the modality does not retry forever.
            log.warning("C-STORE from %s refused: its study was deleted from the mesh",
                        _calling_aet(event))
            return _status(NOT_AUTHORIZED, "Study was deleted from the archive by its admin")
        return SUCCESS

    # --- Query ---------------------------------------------------------------------------

    def on_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        source = _calling_aet(event)
        try:
            root = _model_root(event.request.AffectedSOPClassUID)
            query = parse_identifier(event.identifier, root)
            over_mesh = self.config.query_scope == "mesh" and self.mesh is not None
            if over_mesh and query.level == "IMAGE" and self.mesh is not None:
                rows = self.archive.on_loop(self.mesh.image_rows(query, event.identifier, root))
            else:
                rows = self.archive.on_loop(self.archive.index.find(query, mesh=over_mesh))
        except QueryError as exc:
            log.warning("C-FIND from %s refused: %s", source, exc)
            yield _status(IDENTIFIER_MISMATCH, str(exc)), None
            return
        except Exception as exc:
            log.error("C-FIND from %s failed: %s: %s", source, type(exc).__name__, exc)
            yield _status(CANNOT_UNDERSTAND, "Unable to process the query"), None
            return
        log.info("C-FIND from %s at %s level: %d match(es)", source, query.level, len(rows))
        self.audit.record(event, Action.QUERY, Outcome.SUCCESS,
                          patient_id=exact_value(event.identifier, "PatientID"),
                          study_uid=exact_value(event.identifier, "StudyInstanceUID"),
                          detail=f"{query.level} level, {len(rows)} match(es)")
        layout = layout_for(query, self.config.aet, event.context.transfer_syntax)
        for row in rows:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, (response_identifier(query, row, self.config.aet)
                            if layout is None else layout.identifier(row))

    # --- Retrieve ------------------------------------------------------------------------

    def _matches(self, event: Event) -> list[StoredInstance]:
        query = parse_identifier(event.identifier, _model_root(event.request.AffectedSOPClassUID))
        return self.archive.on_loop(
            self.archive.index.instances_for(query, mesh=self.mesh is not None))

    def _sub_operations(
        self,
        event: Event,
        instances: list[StoredInstance],
        accepted_for: Callable[[str], set[str]],
    ) -> Iterator[tuple[int, Any]]:
        fetching: Fetching | None = None
        if self.mesh is not None and any(not inst.local for inst in instances):
            fetching = self.archive.on_loop(self.mesh.start(instances))
        served_here: list[str] = []
        try:
            for position, inst in enumerate(instances):
                if event.is_cancelled:
                    yield CANCEL, None
                    return
                if fetching is not None and not inst.local:
                    try:
                        self.archive.on_loop(fetching.take(inst.sop_uid))
                    except Exception as exc:  # reported as this sub-operation's failure
                        log.warning("instance %s not fetched from the mesh: %s",
                                    inst.sha256[:12], exc)
                        yield PENDING, _unsendable(inst)
                        continue
                else:
                    served_here.append(inst.sop_uid)
                yield PENDING, self._payload(inst, accepted_for)
                if fetching is not None and not inst.local and self.mesh is not None:
                    # Fetched copies count against the cache now; those still to be
                    # sent in this retrieve are not evicted under it.
                    later = (i.sop_uid for i in islice(instances, position + 1, None))
                    self.archive.on_loop(self.mesh.enforce_budget(later))
        finally:
            if fetching is not None:
                self.archive.on_loop(fetching.close())
            if self.mesh is not None:
                self.archive.on_loop(self.mesh.used_locally(served_here))

    def _payload(self, inst: StoredInstance, accepted_for: Callable[[str], set[str]]) -> Any:
        plan = choose_plan(inst.transfer_syntax_uid, accepted_for(inst.sop_class_uid))
        plain: PlainFile | None = None
        try:
            plain = self.archive.storage.plain_file(inst.sha256)
            payload: Any = prepare(plain.path, plan)
            if isinstance(payload, str):
                payload, plain = StoredFile(payload, inst, plain), None  # it closes plain
        except TamperedObject as exc:
            log.error("instance %s not sent: %s", inst.sha256[:12], exc)
            self.archive.on_loop(self.archive.set_aside(exc.sha256, str(exc)))
            payload = _unsendable(inst)
        except (TranscodeError, OSError) as exc:
            log.warning(
                "instance %s cannot be sent (%s): %s", inst.sha256[:12], plan.value, exc
            )
            payload = _unsendable(inst)
        finally:
            if plain is not None:
                plain.close()
        return payload

    def _audit_retrieve(
        self, event: Event, action: Action, instances: list[StoredInstance], what: str
    ) -> None:
        """One row per study retrieved (instances carry no patient: the identifier's)."""
        per_study: dict[str, int] = {}
        for inst in instances:
            per_study[inst.study_uid] = per_study.get(inst.study_uid, 0) + 1
        patient = exact_value(event.identifier, "PatientID")
        for study, count in sorted(per_study.items()) or [("", 0)]:
            self.audit.record(event, action, Outcome.SUCCESS, patient_id=patient,
                              study_uid=study, detail=f"{what}: {count} instance(s)")

    def on_get(self, event: Event) -> Iterator[Any]:
        source = _calling_aet(event)
        try:
            instances = self._matches(event)
        except Exception as exc:
            log.warning("C-GET from %s refused: %s", source, exc)
            yield 1
            yield _status(IDENTIFIER_MISMATCH, str(exc)), None
            return
        log.info("C-GET from %s: %d instance(s)", source, len(instances))
        self._audit_retrieve(event, Action.RETRIEVE, instances, "C-GET")
        yield len(instances)
        _stream_stored_files(event.assoc)
        accepted = accepted_by_class(event.assoc.accepted_contexts)
        yield from self._sub_operations(event, instances, lambda c: accepted.get(c, set()))

    def on_move(self, event: Event) -> Iterator[Any]:
        source = _calling_aet(event)
        destination_aet = str(event.move_destination.decode("ascii", "replace")
                              if isinstance(event.move_destination, bytes)
                              else event.move_destination).strip()
        destination = self.resolve_destination(destination_aet)
        if destination is None:
            log.warning("C-MOVE from %s refused: unknown destination %r", source, destination_aet)
            self.audit.record(event, Action.REFUSAL, Outcome.SERIOUS_FAILURE,
                              detail=f"C-MOVE to unknown destination {destination_aet}")
            yield None, None
            return
        try:
            instances = self._matches(event)
        except Exception as exc:
            log.warning("C-MOVE from %s refused: %s", source, exc)
            yield destination
            yield 1
            yield _status(IDENTIFIER_MISMATCH, str(exc)), None
            return
        # The sub-association is made by pynetdicom; learn what it accepted when it is up.
        store_assoc: list[Any] = []
        yield destination[0], destination[1], {
            "contexts": move_contexts(instances),
            "evt_handlers": [(evt.EVT_ESTABLISHED, lambda e: store_assoc.append(e.assoc))],
        }
        log.info("C-MOVE from %s to %s: %d instance(s)", source, destination_aet, len(instances))
        self._audit_retrieve(event, Action.EXPORT, instances, f"C-MOVE to {destination_aet}")
        yield len(instances)
        accepted: dict[str, set[str]] = {}
        if store_assoc:
            _stream_stored_files(store_assoc[0])
            accepted = accepted_by_class(store_assoc[0].accepted_contexts)
        yield from self._sub_operations(event, instances, lambda c: accepted.get(c, set()))


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


def exact_value(identifier: Dataset, keyword: str) -> str:
    """A key the requester asked for by value (not empty, not a wildcard), else ''."""
    value = str(identifier.get(keyword, "") or "").strip()
    return "" if any(c in value for c in "*?\\") else value


def part10_bytes(event: Event) -> bytes:
    """``event.encoded_dataset(include_meta=True)``, the same bytes made faster."""
    request = event.request
    meta = encode_file_meta(
        str(request.AffectedSOPClassUID or ""), str(request.AffectedSOPInstanceUID or ""),
        str(event.context.transfer_syntax),
    )
    with request.DataSet.getbuffer() as received:  # no copy before the join
        return b"".join((meta, received))


def accepted_by_class(contexts: Iterable[PresentationContext]) -> dict[str, set[str]]:
    accepted: dict[str, set[str]] = {}
    for cx in contexts:
        if cx.as_scu and cx.transfer_syntax:
            accepted.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return accepted


class StoredFile(Dataset):
    """Stands for an instance sent as its stored bytes.

    pynetdicom's retrieve SCPs take only ``Dataset`` items, while its raw-bytes path
    (``send_c_store(path)`` with STORE_SEND_CHUNKED_DATASET) takes a file: this carries
    the path through, and :func:`_stream_stored_files` hands it to ``send_c_store``.
    """

    def __init__(self, path: str, inst: StoredInstance, plain: PlainFile) -> None:
        super().__init__()
        self.SOPClassUID = inst.sop_class_uid
        self.SOPInstanceUID = inst.sop_uid
        object.__setattr__(self, "stored_path", path)
        # Keeps an unsealed in-memory copy alive until it is sent.
        object.__setattr__(self, "plain", plain)


def _stream_stored_files(assoc: Any) -> None:
    original = assoc.send_c_store
    if getattr(original, "streams_stored_files", False):
        return

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, StoredFile):
            try:
                return original(dataset.stored_path, *args, **kwargs)
            finally:
                dataset.plain.close()
        return original(dataset, *args, **kwargs)

    send_c_store.streams_stored_files = True  # type: ignore[attr-defined]
    assoc.send_c_store = send_c_store


def _unsendable(inst: StoredInstance) -> Dataset:
    """A stand-in whose C-STORE fails, so pynetdicom counts and lists the failure."""
    ds = Dataset()
    ds.SOPClassUID = inst.sop_class_uid
    ds.SOPInstanceUID = inst.sop_uid
    return ds


class HasSyntax(Protocol):
    # Read-only properties: the frozen dataclasses passed here cannot be assigned to.
    @property
    def sop_class_uid(self) -> str: ...

    @property
    def transfer_syntax_uid(self) -> str: ...


def move_contexts(instances: Iterable[HasSyntax]) -> list[PresentationContext]:
    """Contexts to offer a C-MOVE destination: each class in every syntax it is stored in
    (one context each, so the destination can take the stored bytes as they are), and
    in uncompressed form for destinations that accept nothing else."""
    stored: dict[str, set[str]] = {}
    for inst in instances:
        stored.setdefault(inst.sop_class_uid, set()).add(inst.transfer_syntax_uid)
    exact: list[PresentationContext] = []
    plain: list[PresentationContext] = []
    for sop_class, syntaxes in sorted(stored.items()):
        exact += [build_context(sop_class, [ts]) for ts in sorted(syntaxes)]
        plain.append(build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    if len(exact) + len(plain) > MAX_REQUESTED_CONTEXTS:
        # Too many for one association: every instance can still go uncompressed.
        return plain[:MAX_REQUESTED_CONTEXTS]
    return exact + plain

