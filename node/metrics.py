"""Prometheus metrics of one node: a registry per node (several nodes may share a process
in tests), instruments the DIMSE and DICOMweb paths move, and the gauges read at scrape
time from a :class:`node.mesh_view.Health` snapshot."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.mesh_view import Health

# DIMSE latencies run from a C-ECHO's microseconds to a multi-GB C-GET's minutes.
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DIMSE_SERVICES = ("C-ECHO", "C-STORE", "C-FIND", "C-GET", "C-MOVE")
OUTCOMES = ("success", "failure")


class DimseInstruments:
    """Children bound once, so a C-STORE pays no label lookup."""

    def __init__(self, registry: CollectorRegistry) -> None:
        requests = Counter("pacsmesh_dimse_requests", "DIMSE requests served, by outcome",
                           ["service", "outcome"], registry=registry)
        seconds = Histogram("pacsmesh_dimse_seconds", "Time to serve a DIMSE request",
                            ["service"], buckets=_BUCKETS, registry=registry)
        self.counts = {(s, o): requests.labels(s, o) for s in DIMSE_SERVICES for o in OUTCOMES}
        self.latency = {s: seconds.labels(s) for s in DIMSE_SERVICES}

    def observe(self, service: str, ok: bool, elapsed: float) -> None:
        self.counts[service, OUTCOMES[0] if ok else OUTCOMES[1]].inc()
        self.latency[service].observe(elapsed)


class WebInstruments:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("pacsmesh_dicomweb_requests", "DICOMweb requests, by status",
                                ["method", "status"], registry=registry)
        self.latency = Histogram("pacsmesh_dicomweb_seconds", "Time to answer a DICOMweb "
                                 "request (until the body is streamed)", ["method"],
                                 buckets=_BUCKETS, registry=registry)

    def observe(self, method: str, status: int, elapsed: float) -> None:
        self.requests.labels(method, str(status)).inc()
        self.latency.labels(method).observe(elapsed)


class _HealthCollector(Collector):
    """Yields the snapshot the scrape handler gathered just before rendering: collectors
    are synchronous, the facts are not."""

    def __init__(self) -> None:
        self.latest: Health | None = None

    def collect(self) -> Iterator[Metric]:
        h = self.latest
        if h is None:
            return
        yield _gauge("pacsmesh_stored_bytes", "Bytes of instances held here", h.stored_bytes)
        yield _gauge("pacsmesh_stored_instances", "Instances held here", h.instances)
        yield _gauge("pacsmesh_studies", "Studies held here", h.studies)
        yield _gauge("pacsmesh_disk_free_bytes", "Free bytes on the data dir's file system",
                     h.disk_free)
        yield _gauge("pacsmesh_disk_total_bytes", "Size of the data dir's file system",
                     h.disk_total)
        yield _gauge("pacsmesh_quarantined_objects",
                     "Objects that failed their integrity check, set aside", h.quarantined)
        yield _gauge("pacsmesh_under_replicated_studies",
                     "Studies received here and not yet durable on their owners",
                     len(h.mesh.under_replicated))
        yield _gauge("pacsmesh_copies_owed", "Copies owed to members, all together",
                     h.mesh.copies_owed)
        copies = GaugeMetricFamily("pacsmesh_outbox_copies", "Copies owed to a member",
                                   labels=["peer"])
        owed = GaugeMetricFamily("pacsmesh_outbox_bytes", "Bytes owed to a member",
                                 labels=["peer"])
        for debt in h.mesh.debts:
            copies.add_metric([debt.aet or debt.node_id], debt.copies)
            owed.add_metric([debt.aet or debt.node_id], debt.bytes)
        yield copies
        yield owed
        states = GaugeMetricFamily("pacsmesh_peer_state", "1 for each member's current state",
                                   labels=["peer", "state"])
        for m in h.mesh.members:
            if not m.is_self:
                states.add_metric([m.aet or m.node_id, m.state], 1)
        yield states
        failovers = CounterMetricFamily(
            "pacsmesh_fetch_failovers", "Fetches from the mesh that failed at one holder "
            "and went on to the next", h.mesh.fetch_failovers)
        yield failovers
        yield CounterMetricFamily("pacsmesh_fetch_failures",
                                  "Instances no holder could deliver", h.mesh.fetch_failed)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.dimse = DimseInstruments(self.registry)
        self.web = WebInstruments(self.registry)
        self._health = _HealthCollector()
        self.registry.register(self._health)

    def render(self, health: Health) -> bytes:
        """The text exposition, with ``health`` as the scrape-time gauges. Synchronous
        from setting to rendering, so concurrent scrapes on one loop never mix."""
        self._health.latest = health
        return generate_latest(self.registry)
