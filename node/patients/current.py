"""The current identity of every patient from the set of patient events: pure, and a
function of the set alone, so every node that holds the same events answers the same
whatever order they arrived in.

The order is (event time, event id). Updates set attributes per attribute, the latest
winning. Merges and identifier changes are edges from the prior key to the surviving
one; chains resolve (A into B, then B into C: A is C). An edge from a key already
merged, or one that would close a cycle, is ignored here (the node that received it
answers AE, see :func:`merge_problem`): events from two partitions may still cross.
A merge keeps the survivor's demographics (IHE PIR); an identifier change carries the
renamed patient's along where the new key has none of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from node.patients.events import Kind, PatientEvent, PatientKey


@dataclass(frozen=True)
class Current:
    """What a patient key presents as now."""

    key: PatientKey  # the surviving key (itself when never merged)
    attributes: dict[str, str] = field(default_factory=dict)
    merged: bool = False  # the key was merged or renamed into another


@dataclass
class Identities:
    edges: dict[PatientKey, tuple[PatientKey, Kind]] = field(default_factory=dict)
    # key -> attribute -> ((time, id), value)
    stamped: dict[PatientKey, dict[str, tuple[tuple[str, str], str]]] = field(
        default_factory=dict)

    def root(self, key: PatientKey) -> PatientKey:
        seen = {key}
        while key in self.edges:
            key = self.edges[key][0]
            if key in seen:  # never built (cycles are refused) but never loop
                break
            seen.add(key)
        return key

    def keys(self) -> set[PatientKey]:
        return {*self.edges, *(s for s, _ in self.edges.values()), *self.stamped}

    def current(self, key: PatientKey) -> Current:
        root = self.root(key)
        return Current(root, self._attributes(root), merged=root != key)

    def _attributes(self, root: PatientKey) -> dict[str, str]:
        return {name: value for name, (_, value) in sorted(self._stamped_under(root).items())}

    def _stamped_under(self, key: PatientKey) -> dict[str, tuple[tuple[str, str], str]]:
        """The key's own attributes, and for those it has none of, the latest that a
        patient renamed into it had."""
        own = dict(self.stamped.get(key, {}))
        inherited: dict[str, tuple[tuple[str, str], str]] = {}
        for child, (survivor, kind) in self.edges.items():
            if survivor == key and kind is Kind.CHANGE_ID:
                for name, entry in self._stamped_under(child).items():
                    if name not in inherited or entry[0] > inherited[name][0]:
                        inherited[name] = entry
        return {**inherited, **own}


def resolve(events: Iterable[PatientEvent]) -> Identities:
    ids = Identities()
    for event in sorted(events, key=lambda e: e.order):
        if event.prior is not None:
            if event.prior in ids.edges or ids.root(event.patient) == event.prior:
                continue
            ids.edges[event.prior] = (event.patient, event.kind)
        stamps = ids.stamped.setdefault(event.patient, {})
        for name, value in event.attributes.items():
            stamps[name] = (event.order, value)
    return ids


def merge_problem(ids: Identities, event: PatientEvent) -> str | None:
    """Why a merge or identifier change cannot be applied to what is known now, or None."""
    if event.prior is None:
        return None
    if event.prior in ids.edges:
        return f"the prior patient was already merged into {ids.root(event.prior)}"
    if event.patient in ids.edges:
        return f"the surviving patient was itself merged into {ids.root(event.patient)}"
    if ids.root(event.patient) == event.prior:
        return "the merge would make a cycle"
    return None
