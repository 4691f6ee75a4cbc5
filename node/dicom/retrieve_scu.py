"""C-FIND, C-GET and C-MOVE SCU: pull studies from another PACS.

C-GET brings the instances back on our own association (nothing to configure at the
peer). For each class the study holds, every common transfer syntax gets a context of
its own, so the peer can send its stored bytes untouched (a context offering several
syntaxes makes the peer pick one for the whole class, and it then transcodes or fails
the instances stored otherwise). A peer that does not offer C-GET is asked to C-MOVE to
an AE title it knows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES, build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from node.config import RemoteAE
from node.dicom.retrieve_scp import MAX_REQUESTED_CONTEXTS
from node.dicom.scp import storage_classes
from node.dicom.scu import RETRY_DELAYS, AssociationFailed, associate, client_ae, with_retries
from node.dicom.send_scu import Counts
from node.dicom.spool import Spool
from node.dicom.statuses import MOVE_DESTINATION_UNKNOWN

log = logging.getLogger(__name__)
FIND = StudyRootQueryRetrieveInformationModelFind
GET = StudyRootQueryRetrieveInformationModelGet
MOVE = StudyRootQueryRetrieveInformationModelMove
# Most likely first: a class gets as many of these as the context budget allows.
_SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGLosslessSV1,
    JPEGBaseline8Bit, JPEG2000, JPEGLSLossless, RLELossless, JPEGExtended12Bit,
    JPEGLSNearLossless, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
]


class RetrieveError(RuntimeError):
    """The peer refused the query or the retrieve; the message is one line."""


class GetUnsupported(RetrieveError):
    """The peer does not offer C-GET (or no storage class back to us): C-MOVE instead."""


@dataclass(frozen=True)
class Selector:
    """What to pull: a study by StudyInstanceUID, or every study of a patient ID."""

    study_uid: str | None = None
    patient_id: str | None = None


@dataclass(frozen=True)
class Study:
    uid: str
    instances: int | None  # NumberOfStudyRelatedInstances, when the peer says
    sop_classes: tuple[str, ...]  # SOPClassesInStudy, when the peer says


def find_studies(remote: RemoteAE, calling_aet: str, selector: Selector,
                 timeout: float = 30.0) -> list[Study]:
    """The peer's studies matching ``selector`` (C-FIND, Study Root, STUDY level)."""
    ae = client_ae(calling_aet, timeout)
    ae.add_requested_context(FIND)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = selector.study_uid or ""
    if selector.patient_id is not None:
        query.PatientID = selector.patient_id
    query.NumberOfStudyRelatedInstances = ""
    query.SOPClassesInStudy = ""
    assoc = associate(ae, remote)
    try:
        if not any(cx.abstract_syntax == FIND for cx in assoc.accepted_contexts):
            raise RetrieveError(f"{remote} does not answer C-FIND (Study Root)")
        studies = [_study(found) for found in _find(assoc, remote, query)]
        return [s if s.sop_classes else _with_classes(assoc, remote, s)
                for s in studies if s.uid]
    finally:
        if assoc.is_established:
            assoc.release()


def _find(assoc: Association, remote: RemoteAE, query: Dataset) -> list[Dataset]:
    matches = []
    for status, identifier in assoc.send_c_find(query, FIND):
        code = int(status.Status) if "Status" in status else None
        if code is None:
            raise AssociationFailed(f"{remote} broke off the C-FIND")
        if code in (0xFF00, 0xFF01) and identifier is not None:
            matches.append(identifier)
        elif code != 0x0000:
            raise RetrieveError(f"{remote} refused the C-FIND: status 0x{code:04X}")
    return matches


def _with_classes(assoc: Association, remote: RemoteAE, study: Study) -> Study:
    """The study's SOP classes from an IMAGE-level query, for a peer that does not
    answer SOPClassesInStudy. A strictly hierarchical peer refuses it (no series UID):
    then the classes stay unknown and the C-GET asks for every common one."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study.uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    query.SOPClassUID = ""
    try:
        found = _find(assoc, remote, query)
    except RetrieveError as exc:
        log.info("no SOP classes from an IMAGE-level query: %s", exc)
        return study
    classes = tuple(dict.fromkeys(str(f.SOPClassUID) for f in found if f.get("SOPClassUID")))
    return Study(study.uid, study.instances or len(found) or None, classes)


def _study(identifier: Dataset) -> Study:
    count = identifier.get("NumberOfStudyRelatedInstances")
    classes = identifier.get("SOPClassesInStudy") or []
    if isinstance(classes, str):
        classes = [classes]
    return Study(str(identifier.get("StudyInstanceUID", "")),
                 int(count) if count not in (None, "") else None,
                 tuple(str(c) for c in classes if c))


def get_contexts(sop_classes: tuple[str, ...]) -> list[PresentationContext]:
    """Storage contexts to request with the C-GET one: one syntax per context where the
    budget allows, else one context per class offering every syntax."""
    budget = MAX_REQUESTED_CONTEXTS - 2  # the C-GET and C-FIND contexts
    if not sop_classes:
        # The peer did not say which classes: ask for every common one, any syntax.
        return [build_context(uid, ALL_TRANSFER_SYNTAXES) for uid in storage_classes()][:budget]
    per_class = budget // len(sop_classes)
    if per_class < 2:
        return [build_context(uid, ALL_TRANSFER_SYNTAXES) for uid in sop_classes][:budget]
    return [build_context(uid, [ts]) for uid in sop_classes for ts in _SYNTAXES[:per_class]]


def _final_counts(responses: Any, remote: RemoteAE, what: str,
                  on_pending: Callable[[Dataset], None]) -> Counts:
    final: Dataset | None = None
    for status, _identifier in responses:
        if "Status" not in status:
            raise AssociationFailed(f"{remote} broke off the {what}")
        code = int(status.Status)
        if code in (0xFF00, 0xFF01):
            on_pending(status)
            continue
        final = status
    if final is None:
        raise AssociationFailed(f"{remote} sent no final {what} response")
    code = int(final.Status)
    if code == MOVE_DESTINATION_UNKNOWN:
        raise RetrieveError(f"{remote} does not know the C-MOVE destination (status 0xA801): "
                            "add this node's AE title, host and port to its modalities")
    counts = Counts(
        completed=int(final.get("NumberOfCompletedSuboperations") or 0),
        failed=int(final.get("NumberOfFailedSuboperations") or 0),
        warning=int(final.get("NumberOfWarningSuboperations") or 0),
    )
    if code not in (0x0000, 0xB000) and counts.failed == 0:
        # Refused outright (no sub-operation ran): that is a failure, not an empty study.
        raise RetrieveError(f"{remote} refused the {what}: status 0x{code:04X}")
    return counts


def study_identifier(study_uid: str) -> Dataset:
    """The identifier of a STUDY-level C-FIND, C-GET or C-MOVE for one study."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def get_study(remote: RemoteAE, calling_aet: str, study: Study, spool: Spool,
              timeout: float = 30.0, delays: tuple[float, ...] = RETRY_DELAYS) -> Counts:
    """C-GET one study into ``spool``, again (everything) while sub-operations fail."""
    ae = client_ae(calling_aet, timeout)
    ae.maximum_pdu_size = 0
    contexts = get_contexts(study.sop_classes)
    roles = [build_role(uid, scp_role=True)
             for uid in dict.fromkeys(str(cx.abstract_syntax) for cx in contexts)]

    def attempt(n: int) -> Counts:
        if n:
            log.info("C-GET of a study from %s: try %d", remote, n + 1)
        # C-FIND rides along: a peer without C-GET still accepts the association (some
        # abort one where nothing is acceptable), and then says so by refusing the GET.
        assoc = associate(ae, remote, contexts=[build_context(GET), build_context(FIND),
                                                *contexts], ext_neg=roles,
                          evt_handlers=[(evt.EVT_C_STORE, spool.on_store)])
        try:
            accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
            if GET not in accepted:
                raise GetUnsupported(f"{remote} does not offer C-GET")
            if not accepted - {GET, FIND}:
                raise GetUnsupported(f"{remote} would send no storage class back over C-GET")
            return _final_counts(assoc.send_c_get(study_identifier(study.uid), GET), remote,
                                 "C-GET", lambda _s: None)
        finally:
            if assoc.is_established:
                assoc.release()

    return with_retries(attempt, lambda c: c.failed == 0, delays)


def move_study(remote: RemoteAE, calling_aet: str, study: Study, destination_aet: str,
               on_pending: Callable[[Dataset], None] = lambda _s: None,
               timeout: float = 30.0, delays: tuple[float, ...] = RETRY_DELAYS) -> Counts:
    """C-MOVE one study to ``destination_aet`` (which the peer must know), again while
    sub-operations fail."""
    ae = client_ae(calling_aet, timeout)
    ae.add_requested_context(MOVE)

    def attempt(n: int) -> Counts:
        if n:
            log.info("C-MOVE of a study from %s: try %d", remote, n + 1)
        assoc = associate(ae, remote)
        try:
            if not any(cx.abstract_syntax == MOVE for cx in assoc.accepted_contexts):
                raise RetrieveError(f"{remote} offers neither C-GET nor C-MOVE")
            try:
                return _final_counts(
                    assoc.send_c_move(study_identifier(study.uid), destination_aet, MOVE),
                    remote, "C-MOVE", on_pending,
                )
            except AssociationFailed as exc:
                # Orthanc, among others, aborts a C-MOVE from an AE title it does not know.
                raise AssociationFailed(
                    f"{exc} (does it know {destination_aet} as a modality?)") from None
        finally:
            if assoc.is_established:
                assoc.release()

    return with_retries(attempt, lambda c: c.failed == 0, delays)
