"""The node's Prometheus metrics, in a registry of its own (never prometheus_client's global one,
so several agents in one process, as in tests, never share or collide).

Contract:
- The agent feeds it from the two places that already count everything: `Agent.count(what)` and
  `Agent.reject(reason)`, plus a job's verdict (`job_finished`) and a sandbox run (`sandbox_run`).
  The agent's own `counters`/`rejected` dicts stay the source of `node info`; these mirror them.
- Gauges (peers, own reputation, own credits) are read at scrape time through `read_gauges`, so
  they are never stale and nothing has to remember to update them.
- Label values come from the code (rejection reasons, verdict reasons, sandbox names), never from
  a peer's free text, so the number of series stays bounded.
- `/metrics` is served by `node start --metrics HOST:PORT` (`daemon.py`) with `p2p.http`.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

# Announce → verdict of a job: the demo job takes well under a second on loopback, a real one up
# to its timeout plus the result deadline (minutes).
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# Start → exit in a sandbox: milliseconds for a trivial process job, up to an hour's timeout.
RUN_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
REASON_MAX = 64  # a label value, not a message

GAUGES = (
    ("distributeai_peers", "Peers this node is connected to."),
    ("distributeai_reputation", "This node's own reputation, in its own view."),
    ("distributeai_credits", "This node's own credit balance, in its own view."),
    ("distributeai_disk_free_bytes", "Free bytes on the data dir's filesystem, as the disk guard last read them."),
    ("distributeai_disk_low", "1 while the data dir is below the node's disk reserve (it bids on nothing), else 0."),
)


def reason_label(text: str) -> str:
    """A verdict reason ("no two results agree") as a label value (no_two_results_agree)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:REASON_MAX] or "unknown"


class _ScrapeTimeGauges:
    """A collector whose values are read from the agent when Prometheus scrapes."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self.read = read

    def describe(self) -> Iterator[Metric]:
        for name, doc in GAUGES:
            yield GaugeMetricFamily(name, doc)

    def collect(self) -> Iterator[Metric]:
        values = self.read()
        for name, doc in GAUGES:
            if name in values:  # a reader without a disk guard (a test) leaves the disk gauges out
                yield GaugeMetricFamily(name, doc, value=values[name])


class NodeMetrics:
    def __init__(self, read_gauges: Callable[[], dict[str, float]]) -> None:
        """`read_gauges()` returns a value for each name in GAUGES; it is called on each scrape,
        in the scraping task."""
        r = self.registry = CollectorRegistry()
        self.announced = Counter("distributeai_jobs_announced_total",
                                 "Jobs of this node's user that it announced.", registry=r)
        self.bid = Counter("distributeai_jobs_bid_total", "Bids this node sent that a submitter accepted.", registry=r)
        self.awarded = Counter("distributeai_jobs_awarded_total", "Awards this node received as executor.", registry=r)
        self.executed = Counter("distributeai_jobs_executed_total",
                                "Awarded jobs this node ran to a result in its sandbox.", registry=r)
        self.verified = Counter("distributeai_jobs_verified_total", "This node's own jobs that ended verified.",
                                registry=r)
        self.failed = Counter("distributeai_jobs_failed_total",
                              "This node's own jobs that ended failed or nondeterministic, by reason.",
                              ["reason"], registry=r)
        self.gossip_in = Counter("distributeai_gossip_messages_in_total", "Gossip messages received.", registry=r)
        self.gossip_out = Counter("distributeai_gossip_messages_out_total", "Gossip messages published.",
                                  registry=r)
        self.rejected = Counter("distributeai_messages_rejected_total",
                                "Messages and inputs rejected, by reason (as `node info` shows them).",
                                ["reason"], registry=r)
        self.submit_to_verified = Histogram("distributeai_submit_to_verified_seconds",
                                            "This node's own verified jobs: announce to certificate.",
                                            buckets=LATENCY_BUCKETS_S, registry=r)
        self.sandbox_run_seconds = Histogram("distributeai_sandbox_run_seconds",
                                             "Start to exit of a job in the sandbox, by backend.",
                                             ["sandbox"], buckets=RUN_BUCKETS_S, registry=r)
        self.store_full = Counter("distributeai_store_write_failures_total",
                                  "Store writes that failed for want of disk (each dropped one input).", registry=r)
        self.declined = Counter("distributeai_bids_declined_total", "Jobs this node declined to bid on, by reason.",
                                ["reason"], registry=r)
        self.reconcile = Counter("distributeai_reconcile_events_total",
                                 "Certificate-set reconciliation (node/reconcile.py), by event.", ["event"], registry=r)
        r.register(_ScrapeTimeGauges(read_gauges))
        # `Agent.count` names -> the counter they feed; other names are not exported.
        self._counted = {"announced": self.announced, "bids_sent": self.bid, "awarded": self.awarded,
                         "executed": self.executed, "gossip_in": self.gossip_in, "gossip_out": self.gossip_out,
                         "store_full": self.store_full}

    # --- hooks called by the agent --------------------------------------------------------------

    def count(self, what: str) -> None:
        counter = self._counted.get(what)
        if counter is not None:
            counter.inc()
        elif what.startswith("declined_"):  # a bidding.py reason code, so the label set is bounded
            self.declined.labels(reason=what.removeprefix("declined_")).inc()
        elif what.startswith("reconcile_"):  # node/reconcile.py's fixed event names
            self.reconcile.labels(event=what.removeprefix("reconcile_")).inc()

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason=reason).inc()

    def job_finished(self, status: str, reason: str, seconds: float) -> None:
        """One of this node's own jobs reached its verdict `seconds` after it was announced."""
        if status == "verified":
            self.verified.inc()
            self.submit_to_verified.observe(max(0.0, seconds))
        else:
            label = "nondeterministic" if status == "nondeterministic" else reason_label(reason)
            self.failed.labels(reason=label).inc()

    def sandbox_run(self, sandbox: str, seconds: float) -> None:
        self.sandbox_run_seconds.labels(sandbox=sandbox).observe(seconds)

    # --- exposition -----------------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def http_route(self) -> tuple[int, str, bytes]:
        """The `/metrics` route for `p2p.http.serve_http`."""
        return 200, CONTENT_TYPE_LATEST, self.render()
