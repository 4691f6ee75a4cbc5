"""Cached instances served over DICOMweb are marked used at most once a minute each
(node/http/dicomweb/context.py Touches): the mesh cache's LRU order needs no more."""

from __future__ import annotations

from node.http.dicomweb.context import Touches


def test_marked_once_per_interval_and_bounded() -> None:
    now = [100.0]
    touches = Touches(every=60, limit=3, clock=lambda: now[0])
    assert touches.due(["a", "b"]) == ["a", "b"]
    assert touches.due(["a", "b", "c"]) == ["c"]
    now[0] += 59.9
    assert touches.due(["a"]) == []
    now[0] += 0.1
    assert touches.due(["a", "b"]) == ["a", "b"]
    assert touches.due(["d"]) == ["d"]  # c, the least recent, is forgotten
    assert touches.due(["c"]) == ["c"]
