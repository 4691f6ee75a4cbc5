"""Checking a UID once, not each time pynetdicom meets it.

pynetdicom converts and validates every UID it decodes (``utils.set_uid``: a pydicom
``UID``, two regular expressions). A storage association from DCMTK proposes about 120
presentation contexts, each naming the same few transfer syntaxes, and each C-STORE
repeats its SOP class: the same strings, validated thousands of times, cost a storing
node ~80 ms of CPU per association. The result depends only on the arguments, and a UID
is an immutable ``str``, so it can be shared; a value that fails validation raises every
time (exceptions are not cached), and a non-conformant one is logged once. pydicom's
``UID.is_valid``, which negotiation asks twice per proposed transfer syntax, is a pure
function of the string too, and is answered from a cache as well.
"""

from __future__ import annotations

import functools
import re

from pydicom import uid as pydicom_uid
from pynetdicom import dimse_primitives, pdu_items, pdu_primitives, presentation, utils

# Bounded: a SOP Instance UID is new with every C-STORE and never met again.
_CACHE_SIZE = 4096


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
