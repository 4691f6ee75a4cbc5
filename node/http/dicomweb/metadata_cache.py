"""Metadata answers kept ready: each instance's DICOM JSON, and whole study, series and
instance answers (plain and gzipped), in memory, least recently used out first, bounded
by bytes.

An instance's entry is named by its object's SHA-256, and a stored object never changes,
so it can never be stale. An answer's entry also carries a fingerprint of the instances
it was built from (their SHA-256s, in order): a new instance, a deletion, a tombstone or
a quarantine changes what the index returns, so the old answer simply misses. What the
objects do not say, patient identity coerced on output, is dropped by :func:`invalidate`.
"""

from __future__ import annotations

import gzip
import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_BUDGET = 64 * 2**20
# Level 6, zlib's default: a CT series' metadata shrinks ~10x; 9 buys ~3 % more at twice
# the time, spent once per build, but on the first viewer's wait.
_GZIP_LEVEL = 6

_caches: weakref.WeakSet[MetadataCache] = weakref.WeakSet()


@dataclass(frozen=True)
class Answer:
    fingerprint: bytes
    body: bytes
    gzipped: bytes

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped)


AnswerKey = tuple[str, str, str]  # (study, series or "", instance or ""): the path's UIDs


def fingerprint(sha256s: Iterable[str]) -> bytes:
    return hashlib.sha256("\n".join(sha256s).encode()).digest()


def join(parts: Iterable[bytes]) -> bytes:
    """The JSON array of the parts, byte for byte what ``json.dumps`` writes for the
    list of what they encode (its default separators)."""
    return b"[" + b", ".join(parts) + b"]"


def answer(fingerprint_: bytes, parts: Iterable[bytes]) -> Answer:
    body = join(parts)
    return Answer(fingerprint_, body, gzip.compress(body, _GZIP_LEVEL, mtime=0))


class MetadataCache:
    """Used from the event loop only (no locks): building happens in threads, storing
    and looking up on the loop."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.used = 0
        self._instances: OrderedDict[str, tuple[str, bytes]] = OrderedDict()  # sha: study, json
        self._answers: OrderedDict[AnswerKey, Answer] = OrderedDict()
        _caches.add(self)

    def instance(self, sha256: str) -> bytes | None:
        hit = self._instances.get(sha256)
        if hit is None:
            return None
        self._instances.move_to_end(sha256)
        return hit[1]

    def put_instance(self, sha256: str, study_uid: str, data: bytes) -> None:
        if sha256 in self._instances or len(data) > self.budget // 4:
            return
        self._instances[sha256] = (study_uid, data)
        self.used += len(data)
        self._evict()

    def answer(self, key: AnswerKey, fingerprint_: bytes) -> Answer | None:
        hit = self._answers.get(key)
        if hit is None or hit.fingerprint != fingerprint_:
            return None
        self._answers.move_to_end(key)
        return hit

    def put_answer(self, key: AnswerKey, value: Answer) -> None:
        self._drop_answer(key)
        # An answer holds its instances' JSON a second time: one larger than half the
        # budget would push everything else out, itself included, at the next build.
        if value.size > self.budget // 2:
            return
        self._answers[key] = value
        self.used += value.size
        self._evict()

    def invalidate(self, study_uid: str, series_uid: str | None = None) -> None:
        """Forget the study's answers (only the series' when given; the study's and
        its instances' too then) and its instances' JSON."""
        for key in [k for k in self._answers if k[0] == study_uid
                    and (series_uid is None or k[1] in ("", series_uid))]:
            self._drop_answer(key)
        for sha in [s for s, (study, _) in self._instances.items() if study == study_uid]:
            self.used -= len(self._instances.pop(sha)[1])

    def _drop_answer(self, key: AnswerKey) -> None:
        old = self._answers.pop(key, None)
        if old is not None:
            self.used -= old.size

    def _evict(self) -> None:
        while self.used > self.budget and (self._answers or self._instances):
            # Answers first: they are rebuilt from the instances' JSON by a join.
            if self._answers:
                self._drop_answer(next(iter(self._answers)))
            else:
                _, (_, data) = self._instances.popitem(last=False)
                self.used -= len(data)


def invalidate(study_uid: str, series_uid: str | None = None) -> None:
    """Drop what every metadata cache of this process holds for the study (or one of
    its series): to be called when something the stored objects do not say changes
    what a metadata answer holds, e.g. patient identity coerced on output. Changes to
    the instances themselves need no call (see the module's note)."""
    for cache in list(_caches):
        cache.invalidate(study_uid, series_uid)
