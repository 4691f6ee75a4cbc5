"""Query/Retrieve GET and MOVE SCP: the instances a retrieve matches, sent as C-STORE
sub-operations on the requester's association (C-GET) or on one to its destination
(C-MOVE).

pynetdicom runs the retrieve loop (counts, pending and final responses); the handlers
here yield what to send. Stored bytes the requester takes as they are go out through
node/dicom/direct.py: written straight to the socket, and each sub-operation's response
handed back without the DIMSE queue. The association to a C-MOVE destination uses the
same waking reactor as the node's acceptor associations (node/dicom/reactor.py).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import T_CONNECT, AddressInformation, AssociationSocket

from node.archive import Archive
from node.audit import Action, Outcome
from node.config import NodeConfig
from node.dicom.audit_hooks import DicomAudit
from node.dicom.direct import pause_reactor, resume_reactor, send_stored, stored_dataset
from node.dicom.reactor import FastStoreResponses, WakingAssociation, WakingDUL
from node.dicom.statuses import (
    CANCEL,
    IDENTIFIER_MISMATCH,
    PENDING,
    calling_aet,
    exact_key,
    model_root,
    status_dataset,
)
from node.index import StoredInstance
from node.query import Query, parse_identifier
from node.storage import PlainFile, TamperedObject
from node.transcode import (
    Plan,
    TranscodeError,
    choose_plan,
    explicit_to_implicit_parts,
    prepare,
)

log = logging.getLogger(__name__)
MAX_REQUESTED_CONTEXTS = 128


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



class RetrieveService:
    """The C-GET and C-MOVE handlers of :class:`node.dicom.scp.DicomServer`."""

    config: NodeConfig
    archive: Archive
    mesh: MeshSource | None
    audit: DicomAudit

    def resolve_destination(self, aet: str) -> tuple[str, int] | None:
        raise NotImplementedError

    def _matches(self, event: Event) -> list[StoredInstance]:
        query = parse_identifier(event.identifier, model_root(event.request.AffectedSOPClassUID))
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
        patients = self.archive.index.patients
        try:
            plain = opened = self.archive.storage.plain_file(inst.sha256)
            payload: Any
            if patients.presents(inst.patient_id):
                # IHE PIR: decoded and coerced to the current identity on the way out;
                # every other patient keeps the stored-bytes path.
                payload = _decoded(opened.path, plan)
                patients.coerce(payload)
            elif plan is Plan.REENCODE and _to_implicit(inst, accepted_for):
                # Converted from the stored bytes as it is sent.
                payload = StoredFile(str(opened.path), inst, opened, ImplicitVRLittleEndian)
            else:
                payload = prepare(opened.path, plan)
                if isinstance(payload, str):
                    payload = StoredFile(payload, inst, opened)
            if isinstance(payload, StoredFile):
                plain = None  # the StoredFile closes it once sent
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
        patient = exact_key(event.identifier, "PatientID")
        for study, count in sorted(per_study.items()) or [("", 0)]:
            self.audit.record(event, action, Outcome.SUCCESS, patient_id=patient,
                              study_uid=study, detail=f"{what}: {count} instance(s)")

    def on_get(self, event: Event) -> Iterator[Any]:
        source = calling_aet(event)
        try:
            instances = self._matches(event)
        except Exception as exc:
            log.warning("C-GET from %s refused: %s", source, exc)
            yield 1
            yield status_dataset(IDENTIFIER_MISMATCH, str(exc)), None
            return
        log.info("C-GET from %s: %d instance(s)", source, len(instances))
        self._audit_retrieve(event, Action.RETRIEVE, instances, "C-GET")
        yield len(instances)
        _stream_stored_files(event.assoc)
        accepted = accepted_by_class(event.assoc.accepted_contexts)
        yield from self._sub_operations(event, instances, lambda c: accepted.get(c, set()))

    def on_move(self, event: Event) -> Iterator[Any]:
        source = calling_aet(event)
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
            yield status_dataset(IDENTIFIER_MISMATCH, str(exc)), None
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
            pause_reactor(store_assoc[0])
        try:
            yield from self._sub_operations(event, instances, lambda c: accepted.get(c, set()))
        finally:
            if store_assoc:
                resume_reactor(store_assoc[0])



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

    def __init__(self, path: str, inst: StoredInstance, plain: PlainFile,
                 send_as: str | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "stored_path", path)
        object.__setattr__(self, "inst", inst)
        # The transfer syntax to send in, when not the stored one.
        object.__setattr__(self, "send_as", send_as or inst.transfer_syntax_uid)
        # Keeps an unsealed in-memory copy alive until it is sent.
        object.__setattr__(self, "plain", plain)

    # Read, not stored: a data element set on a Dataset costs ~30 us, paid per instance,
    # and pynetdicom reads only the SOP Instance UID (of a failed sub-operation).
    @property
    def SOPClassUID(self) -> str:
        return str(self.inst.sop_class_uid)

    @property
    def SOPInstanceUID(self) -> str:
        return str(self.inst.sop_uid)

    def __bool__(self) -> bool:  # no elements, yet something to send
        return True


def _stream_stored_files(assoc: Any) -> None:
    original = assoc.send_c_store
    if getattr(original, "streams_stored_files", False):
        return

    def send_c_store(dataset: Any, msg_id: int = 1, priority: int = 2,
                     originator_aet: str | None = None,
                     originator_id: int | None = None) -> Dataset:
        if not isinstance(dataset, StoredFile):
            return original(dataset, msg_id, priority, originator_aet, originator_id)
        try:
            inst, path = dataset.inst, dataset.stored_path
            data = None
            if dataset.send_as != inst.transfer_syntax_uid:
                data = explicit_to_implicit_parts(stored_dataset(path))
            if data is not None or dataset.send_as == inst.transfer_syntax_uid:
                status = send_stored(assoc, path, inst.sop_class_uid, inst.sop_uid,
                                     dataset.send_as, msg_id, originator_aet, originator_id,
                                     data)
                if status is not None:
                    return status
            if dataset.send_as == inst.transfer_syntax_uid:
                return original(path, msg_id, priority, originator_aet, originator_id)
            # pydicom decodes what the byte converter does not follow, and pynetdicom
            # re-encodes it.
            return original(prepare(Path(path), Plan.REENCODE), msg_id, priority,
                            originator_aet, originator_id)
        finally:
            dataset.plain.close()

    send_c_store.streams_stored_files = True  # type: ignore[attr-defined]
    assoc.send_c_store = send_c_store


def _decoded(path: Path, plan: Plan) -> Dataset:
    """The stored instance as a data set in a transfer syntax the peer accepted."""
    if plan is not Plan.AS_STORED:
        decoded = prepare(path, plan)
        assert isinstance(decoded, Dataset)
        return decoded
    try:
        return dcmread(path)
    except Exception as exc:
        raise TranscodeError(f"cannot decode: {type(exc).__name__}: {exc}") from exc


def _to_implicit(inst: StoredInstance, accepted_for: Callable[[str], set[str]]) -> bool:
    """Whether the bytes converter can send this instance (a requester that takes
    Implicit VR Little Endian only, say)."""
    return (inst.transfer_syntax_uid == ExplicitVRLittleEndian
            and ImplicitVRLittleEndian in accepted_for(inst.sop_class_uid))


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



class NoDelaySocket(AssociationSocket):
    """A requesting socket that sends each write at once: with Nagle's algorithm, every
    C-STORE request's last PDU waited for the destination's delayed ACK."""

    def connect(self, primitive: T_CONNECT) -> None:
        super().connect(primitive)
        if self.socket is not None and self._is_connected:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NodeAE(AE):
    """The node's AE: associations it requests (to C-MOVE destinations) wait on their
    socket and queues, and send directly, as the ones it accepts do."""

    def _create_socket(self, assoc: Association, address: AddressInformation,
                       tls_args: Any) -> AssociationSocket:
        # Only methods are added, and no thread of this association has started yet.
        assoc.__class__ = WakingAssociation
        assoc.dul.__class__ = WakingDUL
        assoc.dimse.__class__ = FastStoreResponses
        sock = NoDelaySocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock
