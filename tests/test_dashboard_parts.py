"""The dashboard's pure parts: the rate history and the mesh picture's layout."""

from __future__ import annotations

from itertools import pairwise

from node.http.dashboard.history import History, Sample, sparkline
from node.http.dashboard.picture import RADIUS, SIZE, layout
from node.mesh_view import Member


def test_history_keeps_an_hour_at_most_one_sample_per_spacing() -> None:
    h = History(span=3600, spacing=10)
    for t in range(0, 7200, 5):
        h.add(Sample(float(t), float(t), 0))
    samples = h.samples()
    assert samples[-1].at == 7190 and samples[0].at >= 7190 - 3600
    assert all(b.at - a.at >= 10 for a, b in pairwise(samples))


def test_sparkline_spans_the_hour_and_peaks_at_the_top() -> None:
    points = sparkline([Sample(0, 0, 0), Sample(1800, 50, 0), Sample(3600, 100, 0)],
                       now=3600, width=300, height=60)
    assert points == "0.0,60.0 150.0,30.0 300.0,0.0"
    assert sparkline([], now=0) == ""


def test_this_node_in_the_middle_and_the_others_on_a_circle() -> None:
    me = Member("a" * 64, "A", "self", is_self=True)
    others = [Member(c * 64, c.upper(), s) for c, s in (("b", "alive"), ("c", "dead"))]
    dots = layout([*others, me])
    assert (dots[0].x, dots[0].y, dots[0].is_self) == (SIZE / 2, SIZE / 2, True)
    assert [(d.label, d.state) for d in dots[1:]] == [("B", "alive"), ("C", "dead")]
    assert (dots[1].x, dots[1].y) == (SIZE / 2, SIZE / 2 - RADIUS)  # the first at the top
