"""Which calling AE titles may associate, and which may retrieve (pure code).

``open`` (the default): any AE may echo, store and query; C-GET and C-MOVE only from
AEs this node knows (the configured modalities, ``allowed_aets``, mesh members and
devices announcing ``_dicom._tcp``), since a retrieve hands out patient data.
``strict``: only those AEs may associate at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AccessPolicy:
    mode: str = "open"
    listed: frozenset[str] = frozenset()  # allowed_aets plus the configured modalities
    # Mesh members' and discovered devices' AE titles, asked each time: they change.
    mesh_known: Callable[[], Iterable[str]] = field(default=lambda: ())

    @classmethod
    def build(cls, mode: str, allowed: Iterable[str], modalities: Iterable[str],
              mesh_known: Callable[[], Iterable[str]] | None = None) -> AccessPolicy:
        return cls(mode, frozenset(a.strip() for a in (*allowed, *modalities)),
                   mesh_known or (lambda: ()))

    def knows(self, aet: str) -> bool:
        aet = aet.strip()
        return aet in self.listed or aet in set(self.mesh_known())

    def may_associate(self, aet: str) -> bool:
        return self.mode == "open" or self.knows(aet)

    def may_retrieve(self, aet: str) -> bool:
        return self.knows(aet)
