"""Where the mesh picture puts each member: this node in the middle, the others on a
circle around it, each with a link to the middle coloured by that member's state."""

from __future__ import annotations

import math
from dataclasses import dataclass

from node.mesh_view import Member

SIZE = 320
RADIUS = 120


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    label: str
    state: str
    is_self: bool


def layout(members: list[Member]) -> list[Dot]:
    centre = SIZE / 2
    others = [m for m in members if not m.is_self]
    dots = [Dot(centre, centre, m.aet or m.node_id[:12], m.state, True)
            for m in members if m.is_self]
    for i, m in enumerate(others):
        angle = 2 * math.pi * i / max(1, len(others)) - math.pi / 2
        dots.append(Dot(round(centre + RADIUS * math.cos(angle), 1),
                        round(centre + RADIUS * math.sin(angle), 1),
                        m.aet or m.node_id[:12], m.state, False))
    return dots
