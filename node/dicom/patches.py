"""Every change this node makes to pynetdicom and pydicom, in one place, with the versions
it was written against.

The node reaches into both libraries: process-wide settings, a cached UID check, storage
classes pynetdicom does not list, and (in node/dicom/reactor.py) subclasses that override
private methods and read private attributes of pynetdicom's DUL, DIMSE, association and
server. Private things change without notice between minor releases, so the pins in
pyproject.toml (``PINNED`` here) are checked when the patches are applied: a mismatch
stops the node at start with one line naming both libraries, instead of failing later on
a live association.

:func:`apply` is idempotent and runs before the first association (the node's start, the
CLI's DICOM tools); :func:`quiet_pydicom_reading` runs on import of node/dicom_header.py,
as any process that reads a header (``pacsmesh import``, the tests) needs it.

How the UID checks are memoized, and why: pynetdicom converts and validates every UID it
decodes (``utils.set_uid``: a pydicom ``UID``, two regular expressions). A storage
association from DCMTK proposes about 120 presentation contexts, each naming the same few
transfer syntaxes, and each C-STORE repeats its SOP class: the same strings, validated
thousands of times, cost a storing node ~80 ms of CPU per association. The result depends
only on the arguments, and a UID is an immutable ``str``, so it can be shared; a value
that fails validation raises every time (exceptions are not cached), and a non-conformant
one is logged once. pydicom's ``UID.is_valid``, which negotiation asks twice per proposed
transfer syntax, is a pure function of the string too, and is answered from a cache too.
"""

from __future__ import annotations

import functools
import re
import time
import types
from collections.abc import Mapping
from typing import Any

import pydicom
import pynetdicom
from pydicom import config as pydicom_config
from pydicom import uid as pydicom_uid
from pynetdicom import (
    _config,
    dimse_primitives,
    pdu_items,
    pdu_primitives,
    presentation,
    service_class,
    utils,
)
from pynetdicom import sop_class as known_classes
from pynetdicom import timer as pynetdicom_timer
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from node.dicom.find_encoding import EncodedIdentifier
from node.errors import LocalFailure

# The minor versions pyproject.toml pins (tests/test_dicom_patches.py keeps them equal).
PINNED = {"pynetdicom": "3.0", "pydicom": "3.0"}

# What node/dicom/reactor.py, direct.py and retrieve_scp.py override or call that is not
# public API; checked at start
# so that an install that bypassed the pins (``pip install --no-deps``) fails clearly.
REACTOR_HOOKS: tuple[tuple[type, str], ...] = (
    (DULServiceProvider, "run_reactor"),
    (DULServiceProvider, "_process_recv_primitive"),
    (DULServiceProvider, "_is_transport_event"),
    (DIMSEServiceProvider, "send_msg"),
    (DIMSEServiceProvider, "receive_primitive"),
    (ApplicationEntity, "_create_socket"),
    (Association, "_get_valid_context"),
    (Association, "_handle_no_response"),
    (Association, "_run_reactor"),
    (Association, "_serve_request"),
    (AssociationSocket, "recv"),
    (RequestHandler, "_create_association"),
    (ThreadedAssociationServer, "get_request"),
)

# Retired image storage classes pynetdicom does not list; old ultrasound and nuclear
# medicine archives are full of them, and a PACS must still take them in.
RETIRED_IMAGE_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.3": "UltrasoundMultiFrameImageStorageRetired",
    "1.2.840.10008.5.1.4.1.1.5": "NuclearMedicineImageStorageRetired",
    "1.2.840.10008.5.1.4.1.1.6": "UltrasoundImageStorageRetired",
    "1.2.840.10008.5.1.4.1.1.12.3": "XRayAngiographicBiPlaneImageStorageRetired",
}

# Bounded: a SOP Instance UID is new with every C-STORE and never met again.
_CACHE_SIZE = 4096


class UnsupportedLibrary(LocalFailure, RuntimeError):
    """pynetdicom or pydicom is not the version whose internals the node patches."""


def installed_versions() -> dict[str, str]:
    return {"pynetdicom": pynetdicom.__version__, "pydicom": pydicom.__version__}


def check_versions(installed: Mapping[str, str] | None = None) -> None:
    """Raise UnsupportedLibrary unless each library is at its pinned minor version."""
    have = installed_versions() if installed is None else installed
    if all(_minor(have[name]) == minor for name, minor in PINNED.items()):
        return
    needed = " and ".join(f"{name} {minor}.x" for name, minor in PINNED.items())
    found = ", ".join(f"{name} {have[name]}" for name in PINNED)
    raise UnsupportedLibrary(
        f"PACSmesh needs {needed} (it relies on their internals); installed: {found}"
        " (pip install the versions pyproject.toml pins)"
    )


def check_reactor_hooks() -> None:
    missing = [f"{owner.__name__}.{name}" for owner, name in REACTOR_HOOKS
               if not hasattr(owner, name)]
    if missing:
        raise UnsupportedLibrary(
            f"pynetdicom {pynetdicom.__version__} lacks what node/dicom/ overrides or calls:"
            f" {', '.join(missing)}"
        )


def apply() -> None:
    """Check the versions, then make every process-wide change (idempotent)."""
    check_versions()
    check_reactor_hooks()
    quiet_pydicom_reading()
    memoize_uid_checks()
    pass_encoded_identifiers()
    for uid, keyword in RETIRED_IMAGE_STORAGE.items():
        if not hasattr(known_classes, keyword):
            known_classes.register_uid(uid, keyword, StorageServiceClass)
    # Raw-bytes fast path for C-STORE from files; no identifiers (patient data) in logs.
    _config.STORE_SEND_CHUNKED_DATASET = True
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    monotonic_timers()


def monotonic_timers() -> None:
    """pynetdicom's timers (ARTIM, and the idle timer, fixed at 60 s) read the wall
    clock: a clock stepped forward a minute would expire every association's idle timer
    at once. A C-MOVE was seen aborted mid-retrieve (three times in benchmark runs, twice
    on main) with its association to the destination and its requester's association
    both ended "idle past the network timeout" in the same millisecond, two timers
    started at different times: a step explains that, though none was caught (a
    watcher saw no step in four minutes). They only measure intervals: the monotonic
    clock is the right one either way."""
    if getattr(pynetdicom_timer.time, "monotonic_only", False):
        return
    pynetdicom_timer.time = types.SimpleNamespace(  # type: ignore[assignment]
        time=time.monotonic, monotonic_only=True)


def pass_encoded_identifiers() -> None:
    """C-FIND identifiers already encoded (node.dicom.find_encoding) go out as they
    are: the C-FIND SCP's one ``encode`` call per pending response returns their bytes
    instead of encoding a dataset. Anything else is encoded as before."""
    global _passing_encoded
    if _passing_encoded:
        return
    original = service_class.encode

    @functools.wraps(original)
    def encode(ds: Any, is_implicit_vr: bool, is_little_endian: bool,
               deflated: bool = False) -> bytes | None:
        if isinstance(ds, EncodedIdentifier):
            return ds.encoded
        return original(ds, is_implicit_vr, is_little_endian, deflated)

    service_class.encode = encode  # type: ignore[assignment]
    _passing_encoded = True


_passing_encoded = False


def quiet_pydicom_reading() -> None:
    # We store bytes as received: odd values are the sender's business, and pydicom's
    # validation messages quote values (patient names, IDs) into the logs.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _conformant(value: str) -> bool:
    return len(value) <= 64 and re.match(pydicom_uid.RE_VALID_UID, value) is not None


def _is_valid(self: pydicom_uid.UID) -> bool:
    return _conformant(str.__str__(self))


def memoize_uid_checks() -> None:
    """Make pynetdicom's modules use a cached ``set_uid``, and pydicom's ``UID`` a cached
    ``is_valid`` (idempotent)."""
    if getattr(utils.set_uid, "memoized", False):
        return
    pydicom_uid.UID.is_valid = property(_is_valid)  # type: ignore[method-assign,assignment]
    cached = functools.lru_cache(maxsize=_CACHE_SIZE)(utils.set_uid)
    cached.memoized = True  # type: ignore[attr-defined]
    for module in (utils, dimse_primitives, pdu_items, pdu_primitives, presentation):
        module.set_uid = cached  # type: ignore[attr-defined]


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
