"""The replication rate over the last hour, for the dashboard's small chart: samples of
(time, bytes per second, copies owed), at most one per ``spacing`` seconds. Pure code."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

HOUR = 3600.0


@dataclass(frozen=True)
class Sample:
    at: float
    bytes_per_second: float
    copies_owed: int


class History:
    def __init__(self, span: float = HOUR, spacing: float = 10.0) -> None:
        self.span = span
        self.spacing = spacing
        self._samples: deque[Sample] = deque()

    def add(self, sample: Sample) -> None:
        if self._samples and sample.at - self._samples[-1].at < self.spacing:
            return
        self._samples.append(sample)
        while self._samples and sample.at - self._samples[0].at > self.span:
            self._samples.popleft()

    def samples(self) -> list[Sample]:
        return list(self._samples)


def sparkline(samples: list[Sample], now: float, span: float = HOUR, width: int = 300,
              height: int = 60) -> str:
    """SVG polyline points of bytes per second over the ``span`` before ``now``."""
    if not samples:
        return ""
    top = max(s.bytes_per_second for s in samples) or 1.0
    points = []
    for s in samples:
        x = width * (1 - (now - s.at) / span)
        y = height - height * s.bytes_per_second / top
        points.append(f"{max(0.0, x):.1f},{y:.1f}")
    return " ".join(points)
