"""The mesh wire of replication: paths, headers and the JSON messages members exchange.

Sans-IO, in the manner of h11: nothing here opens a socket. Every JSON body replication
reads from a peer is parsed here, once, into a frozen message; ``from_json`` checks each
field's type and raises only :class:`~replication.errors.RemoteAnswerInvalid`, so callers
catch that (with ``discovery.probe.ProbeFailed`` for the transport) and nothing broader:
a ``KeyError`` or ``TypeError`` past this module is a bug of ours, and shows as one.
``to_json`` is the form we produce, where this node serves the message.

The change feed's rows are their own module's (``replication.change``): they are many
fields, and the catalog's job rather than the transport's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from pydicom.dataset import Dataset

from replication.change import CatalogChange
from replication.errors import RemoteAnswerInvalid
from replication.wire_fields import (
    as_list,
    as_object,
    optional_bool,
    required_bool,
    required_int,
    required_str,
)

# Paths (members only, mutual TLS). Values are the protocol: never change one alone.
CHANGES_PATH = "/mesh/changes"
DIGEST_PATH = "/mesh/digest"
HOLDINGS_PATH = "/mesh/holdings"
FIND_PATH = "/mesh/find"
TOMBSTONES_PATH = "/mesh/tombstones"
PATIENT_EVENTS_PATH = "/mesh/patient-events"
ORDER_EVENTS_PATH = "/mesh/order-events"
OBJECTS_PATH = "/mesh/objects/{sha256}"
PARTIAL_PATH = "/mesh/objects/{sha256}/partial"

# Headers of an object transfer (PUT and GET of OBJECTS_PATH).
SHA_HEADER = "X-Pacsmesh-Sha256"
SIZE_HEADER = "X-Pacsmesh-Size"  # raw bytes of the whole object
OFFSET_HEADER = "X-Pacsmesh-Offset"  # raw bytes the body skips (held here already)
# Our own header rather than Content-Encoding, so no HTTP layer decodes it behind our back.
ENCODING_HEADER = "X-Pacsmesh-Encoding"

__all__ = [
    "CHANGES_PATH",
    "DIGEST_PATH",
    "ENCODING_HEADER",
    "FIND_PATH",
    "HOLDINGS_PATH",
    "OBJECTS_PATH",
    "OFFSET_HEADER",
    "ORDER_EVENTS_PATH",
    "PARTIAL_PATH",
    "PATIENT_EVENTS_PATH",
    "SHA_HEADER",
    "SIZE_HEADER",
    "TOMBSTONES_PATH",
    "CatalogChange",
    "ChangePage",
    "Digest",
    "FindAnswer",
    "FindRequest",
    "Holdings",
    "OrderEventList",
    "PartialHeld",
    "PatientEventList",
    "TombstoneList",
    "TransferReceipt",
    "bucket_param",
]


@dataclass(frozen=True, slots=True)
class ChangePage:
    """``GET /mesh/changes?since=N``: one page of a member's change feed."""

    changes: tuple[CatalogChange, ...]
    next: int  # the sequence number to ask from next time
    more: bool  # whether changes beyond this page wait

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        page = as_object(obj, "change page")
        changes = as_list(page.get("changes"), "change page 'changes'")
        return cls(changes=tuple(CatalogChange.from_json(c) for c in changes),
                   next=required_int(page, "next", "change page"),
                   more=required_bool(page, "more", "change page"))

    def rows(self) -> list[dict[str, Any]]:
        """The changes as the catalog store takes them."""
        return [c.to_json() for c in self.changes]


@dataclass(frozen=True, slots=True)
class Digest:
    """``GET /mesh/digest``: bucket -> digest of what the member holds and owns."""

    buckets: Mapping[int, str]

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        answer = as_object(obj, "digest")
        buckets: dict[int, str] = {}
        for key, value in answer.items():
            if not isinstance(value, str):
                raise RemoteAnswerInvalid(f"digest of bucket {key!r:.20} is not a string")
            buckets[_bucket_number(key, "digest")] = value
        return cls(buckets)

    def to_json(self) -> dict[str, str]:
        return {str(b): d for b, d in self.buckets.items()}


@dataclass(frozen=True, slots=True)
class Holdings:
    """``GET /mesh/holdings?bucket=N``: SOP Instance UID -> SHA-256 of one bucket."""

    held: Mapping[str, str]

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        answer = as_object(obj, "holdings")
        for sop, sha in answer.items():
            if not isinstance(sha, str):
                raise RemoteAnswerInvalid(f"holdings: the hash of {sop[:64]!r} is not a string")
        return cls(dict(answer))

    def to_json(self) -> dict[str, str]:
        return dict(self.held)


def bucket_param(query: Mapping[str, str]) -> int:
    """The ``bucket`` a holdings request asks for."""
    if "bucket" not in query:
        raise RemoteAnswerInvalid("bucket missing")
    return _bucket_number(query["bucket"], "bucket")


def _bucket_number(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RemoteAnswerInvalid(f"{what}: {text[:20]!r} is not a bucket number") from None


@dataclass(frozen=True, slots=True)
class PartialHeld:
    """``GET /mesh/objects/<sha256>/partial``: how much of an object the receiver holds."""

    stored: bool  # the whole object, stored: nothing to send
    offset: int  # raw bytes of a resumable part held (0 when none)

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        answer = as_object(obj, "partial transfer answer")
        return cls(stored=required_bool(answer, "stored", "partial transfer answer"),
                   offset=required_int(answer, "offset", "partial transfer answer"))

    def to_json(self) -> dict[str, Any]:
        return {"stored": self.stored, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class TransferReceipt:
    """The answer to ``PUT /mesh/objects/<sha256>``: the ingest status of the object."""

    status: str  # "stored" or "duplicate" (refusals are HTTP statuses, not receipts)

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        answer = as_object(obj, "transfer receipt")
        return cls(status=required_str(answer, "status", "transfer receipt"))

    def to_json(self) -> dict[str, str]:
        return {"status": self.status}


@dataclass(frozen=True, slots=True)
class FindRequest:
    """``POST /mesh/find``: an IMAGE-level C-FIND identifier asked of a holder."""

    identifier: Dataset
    root: str = "STUDY"  # the information model: "STUDY" or "PATIENT"

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        ask = as_object(obj, "find request")
        identifier = as_object(ask.get("identifier"), "find request 'identifier'")
        root = ask.get("root", "STUDY")
        if not isinstance(root, str):
            raise RemoteAnswerInvalid("find request: 'root' is not a string")
        try:
            dataset = Dataset.from_json(identifier)
        # pydicom's JSON reader raises whichever of these its input provokes; here they
        # can only be about the peer's identifier.
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RemoteAnswerInvalid(f"find request: identifier unreadable: {exc}") from None
        return cls(dataset, root)

    def to_json(self) -> dict[str, Any]:
        return {"identifier": self.identifier.to_json_dict(), "root": self.root}


@dataclass(frozen=True, slots=True)
class FindAnswer:
    """The answer to ``POST /mesh/find``: the holder's matching rows (keyword -> value)."""

    rows: tuple[dict[str, Any], ...]

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        answer = as_object(obj, "find answer")
        rows = as_list(answer.get("rows"), "find answer 'rows'")
        return cls(tuple(as_object(r, "find answer row") for r in rows))

    def to_json(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}


@dataclass(frozen=True, slots=True)
class TombstoneList:
    """``GET /mesh/tombstones?digest=D``: the member's tombstones, or that it holds the
    same set (``same``). Each document is checked on its own (``check_tombstone``): one
    forged tombstone must not keep the others out."""

    digest: str
    same: bool = False
    tombstones: tuple[Any, ...] = ()

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        answer = as_object(obj, "tombstone list")
        digest = required_str(answer, "digest", "tombstone list")
        if optional_bool(answer, "same", "tombstone list"):
            return cls(digest, same=True)
        documents = as_list(answer.get("tombstones"), "tombstone list 'tombstones'")
        return cls(digest, tombstones=tuple(documents))

    def to_json(self) -> dict[str, Any]:
        if self.same:
            return {"digest": self.digest, "same": True}
        return {"digest": self.digest, "tombstones": list(self.tombstones)}


@dataclass(frozen=True, slots=True)
class PatientEventList:
    """``GET /mesh/patient-events?digest=D``: the member's patient events, or that it
    holds the same set (``same``). Each event is read on its own (``PatientEvent.
    from_json``): one a newer member writes differently must not keep the others out.
    The shape of :class:`TombstoneList`, with ``events`` for ``tombstones``."""

    digest: str
    same: bool = False
    events: tuple[Any, ...] = ()

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        as_tombstones = TombstoneList.from_json(
            {**as_object(obj, "patient event list"), "tombstones": obj.get("events", [])})
        return cls(as_tombstones.digest, as_tombstones.same, as_tombstones.tombstones)

    def to_json(self) -> dict[str, Any]:
        answer = TombstoneList(self.digest, self.same, self.events).to_json()
        if "tombstones" in answer:
            answer["events"] = answer.pop("tombstones")
        return answer


# ``GET /mesh/order-events?digest=D`` (replication.order_sync): the same shape, each
# event an order event (node.worklist.events.OrderEvent).
OrderEventList = PatientEventList
