"""The bootstrap's Prometheus metrics, read from its `Stats` when Prometheus scrapes.

Nothing is counted twice: the figures are the ones `/api/stats` shows, exported through a collector
in a registry of the bootstrap's own (never prometheus_client's global one). Label values are
certificate statuses and rejection reasons, both fixed by the code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .service import Stats

STATUSES = ("verified", "failed", "nondeterministic")  # always exported, so rates start at 0


class _StatsCollector:
    def __init__(self, stats: "Stats", nodes_online: Callable[[], int]) -> None:
        self.stats = stats
        self.nodes_online = nodes_online

    def describe(self) -> Iterator[Metric]:
        yield from self._families(describe=True)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(describe=False)

    def _families(self, describe: bool) -> Iterator[Metric]:
        online = GaugeMetricFamily("distributeai_bootstrap_nodes_online", "Nodes connected to the bootstrap.")
        announced = CounterMetricFamily("distributeai_bootstrap_jobs_announced",
                                        "Verified job announcements seen on the jobs topic.")
        certified = CounterMetricFamily("distributeai_bootstrap_jobs_certified",
                                        "Verified certificates seen on the jobs topic, by status.", labels=["status"])
        rejected = CounterMetricFamily("distributeai_bootstrap_messages_rejected",
                                       "Gossip messages the bootstrap rejected, by reason.", labels=["reason"])
        if not describe:
            s = self.stats
            online.add_metric([], self.nodes_online())
            announced.add_metric([], s.announced)
            for status in sorted(set(STATUSES) | set(s.certified)):
                certified.add_metric([status], s.certified.get(status, 0))
            for reason, n in sorted(s.rejected.items()):
                rejected.add_metric([reason], n)
        yield from (online, announced, certified, rejected)


class BootstrapMetrics:
    def __init__(self, stats: "Stats", nodes_online: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StatsCollector(stats, nodes_online))

    async def http_route(self) -> tuple[int, str, bytes]:
        """The `/metrics` route for `p2p.http.serve_http`."""
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
