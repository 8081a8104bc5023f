"""Prometheus metrics: the node's and the bootstrap's names and labels on their own, then a real
network scraped by a real Prometheus server (the Debian package `prometheus`, run here as a plain
subprocess listening on 127.0.0.1 only)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from distributeai.bootstrap.metrics import BootstrapMetrics
from distributeai.tools.devnet import Devnet
from distributeai.node.metrics import NodeMetrics

from .netfixtures import DEMO_ARGS, cli, missing, submit_json, wait_for

DASHBOARD = Path(__file__).resolve().parent.parent / "bootstrap" / "grafana-dashboard.json"
PROMETHEUS = "/usr/bin/prometheus"  # Debian 12: apt-get install prometheus
PROMETHEUS_START_S = 60.0  # a safety net: a loaded 2-core machine starts it slowly
# No proxy, ever: every address here is loopback.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def names(text: bytes) -> set[str]:
    return {name for name, _ in samples(text)}


# --- the metrics on their own ---------------------------------------------------------------------

def test_node_metrics_names_and_labels():
    m = NodeMetrics(lambda: {"distributeai_peers": 4, "distributeai_reputation": -10, "distributeai_credits": 97})
    for what in ("announced", "bids_sent", "awarded", "executed", "gossip_in", "gossip_in", "gossip_out",
                 "reannounced"):  # the last one is not exported
        m.count(what)
    m.reject("bad_signature")
    m.reject("bad_signature")
    m.reject("replay")
    m.job_finished("verified", "", 0.3)
    m.job_finished("failed", "no bids: no node offered to run this job", 5.0)
    m.job_finished("nondeterministic", "no two results agree", 5.0)
    m.sandbox_run("process", 0.004)
    m.sandbox_run("docker", 0.7)
    got = samples(m.render())
    one = lambda name, **labels: got[(name, tuple(sorted(labels.items())))]  # noqa: E731
    for name in ("jobs_announced", "jobs_bid", "jobs_awarded", "jobs_executed", "jobs_verified",
                 "gossip_messages_out"):
        assert one(f"distributeai_{name}_total") == 1, name
    assert one("distributeai_gossip_messages_in_total") == 2
    assert one("distributeai_messages_rejected_total", reason="bad_signature") == 2
    assert one("distributeai_messages_rejected_total", reason="replay") == 1
    assert one("distributeai_jobs_failed_total", reason="no_bids_no_node_offered_to_run_this_job") == 1
    assert one("distributeai_jobs_failed_total", reason="nondeterministic") == 1
    assert one("distributeai_submit_to_verified_seconds_count") == 1
    assert one("distributeai_submit_to_verified_seconds_bucket", le="0.5") == 1
    assert one("distributeai_submit_to_verified_seconds_bucket", le="0.25") == 0
    assert one("distributeai_sandbox_run_seconds_count", sandbox="process") == 1
    assert one("distributeai_sandbox_run_seconds_bucket", sandbox="docker", le="1.0") == 1
    assert one("distributeai_sandbox_run_seconds_bucket", sandbox="docker", le="0.5") == 0
    assert (one("distributeai_peers"), one("distributeai_reputation"), one("distributeai_credits")) == (4, -10, 97)
    assert all(n.startswith("distributeai_") for n in names(m.render()))
    assert not any("reannounced" in n for n in names(m.render()))
    # Never the process-wide registry: two agents in one process do not collide.
    NodeMetrics(lambda: {})
    assert b"distributeai_" not in generate_latest(REGISTRY)


def test_bootstrap_metrics_read_its_stats():
    stats = SimpleNamespace(announced=3, certified=Counter(verified=2, failed=1), rejected=Counter(replay=4))
    m = BootstrapMetrics(stats, lambda: 5)

    async def scrape() -> tuple:
        return await m.http_route()

    status, ctype, body = trio.run(scrape)
    assert status == 200 and ctype == CONTENT_TYPE_LATEST
    got = samples(body)
    assert got[("distributeai_bootstrap_nodes_online", ())] == 5
    assert got[("distributeai_bootstrap_jobs_announced_total", ())] == 3
    assert got[("distributeai_bootstrap_jobs_certified_total", (("status", "verified"),))] == 2
    assert got[("distributeai_bootstrap_jobs_certified_total", (("status", "failed"),))] == 1
    assert got[("distributeai_bootstrap_jobs_certified_total", (("status", "nondeterministic"),))] == 0
    assert got[("distributeai_bootstrap_messages_rejected_total", (("reason", "replay"),))] == 4
    stats.announced += 1  # read at scrape time
    assert samples(trio.run(scrape)[2])[("distributeai_bootstrap_jobs_announced_total", ())] == 4


def dashboard_queries() -> list[str]:
    """The PromQL of every panel of the Grafana dashboard, its variables filled in."""
    doc = json.loads(DASHBOARD.read_text())
    assert doc["__inputs"][0]["name"] == "DS_PROMETHEUS"
    return [t["expr"].replace("$__rate_interval", "5s").replace("$instance", ".*")
            for p in doc["panels"] for t in p.get("targets", [])]


def test_grafana_dashboard_names_only_exported_metrics():
    node = NodeMetrics(lambda: {"distributeai_peers": 0, "distributeai_reputation": 0, "distributeai_credits": 0})
    node.job_finished("failed", "cancelled", 1)
    node.reject("replay")
    node.sandbox_run("process", 0.1)
    stats = SimpleNamespace(announced=0, certified=Counter(), rejected=Counter(replay=1))

    exported = names(node.render()) | names(trio.run(BootstrapMetrics(stats, lambda: 0).http_route)[2])
    used = {n for q in dashboard_queries() for n in re.findall(r"distributeai_\w+", q)}
    assert used and used <= exported, used - exported


# --- a real network scraped by a real Prometheus --------------------------------------------------

def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (PROMETHEUS if os.access(PROMETHEUS, os.X_OK) else None)
    if found is None:
        missing("prometheus is not installed (Debian: apt-get install prometheus)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5) -> tuple[int, str, bytes]:
    with OPENER.open(url, timeout=timeout) as r:
        return r.status, r.headers.get("content-type", ""), r.read()


class Prometheus:
    """A Prometheus server of this test's own: loopback only, no remote read/write, no alerting,
    no lifecycle or admin API, state in a temporary directory."""

    def __init__(self, binary: str, root: Path, targets: dict[str, str]) -> None:
        """`targets`: a `node` label value -> the HOST:PORT whose /metrics to scrape."""
        root.mkdir(parents=True)
        jobs = "".join(f"      - targets: ['{addr}']\n        labels: {{node: '{name}'}}\n"
                       for name, addr in targets.items())
        (root / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\n"
            f"scrape_configs:\n  - job_name: distributeai\n    static_configs:\n{jobs}")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "log"
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=root)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                return get(self.url + "/-/ready")[0] == 200
            except OSError:
                return False
        wait_for(ready, PROMETHEUS_START_S, "prometheus to be ready")

    def query(self, promql: str) -> dict[str, float]:
        """An instant query: {value of the `node` label: value}."""
        _, _, body = get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return {r["metric"].get("node", ""): float(r["value"][1]) for r in answer["data"]["result"]}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_prometheus(binary: str, root: Path, targets: dict[str, str], attempts: int = 5) -> Prometheus:
    """A ready Prometheus. free_port() finds a port free now, which another process on the machine
    may take before Prometheus binds it: Prometheus then exits saying so, and another is tried."""
    for attempt in range(attempts):
        prom = Prometheus(binary, root / f"attempt{attempt}", targets)
        try:
            prom.wait_ready()
            return prom
        except AssertionError:
            prom.stop()
            if "address already in use" not in prom.log.read_text():
                raise
    raise AssertionError(f"prometheus found no free port in {attempts} attempts")


@pytest.mark.slow
def test_prometheus_scrapes_a_network_that_ran_the_demo_job(tmp_path):
    binary = prometheus_binary()
    with Devnet(tmp_path / "net", nodes=3, sandbox="process", metrics=True) as net:
        net.start()
        net.wait_connected()
        urls = [net.info(i)["metrics_url"] for i in range(3)]
        assert all(u.startswith("http://127.0.0.1:") and u.endswith("/metrics") for u in urls), urls
        shown = json.loads(cli("node", "info", "--data-dir", str(net.node_dirs[0]), "--json").stdout)
        assert shown["metrics_url"] == urls[0]
        # Prometheus before the job: it applies its first targets only after about 5 s (its scrape
        # manager reloads on a fixed 5 s tick), so the job runs meanwhile.
        targets = {f"node{i + 1}": urllib.parse.urlsplit(u).netloc for i, u in enumerate(urls)}
        targets["bootstrap"] = urllib.parse.urlsplit(net.http_url).netloc
        prom = start_prometheus(binary, tmp_path / "prometheus", targets)
        try:
            outcome, _ = submit_json(net.node_dirs[0], *DEMO_ARGS)
            assert outcome["status"] == "verified", outcome

            # The bootstrap's /metrics, read directly.
            status, ctype, body = get(net.http_url + "/metrics")
            assert status == 200 and ctype == CONTENT_TYPE_LATEST
            assert {"distributeai_bootstrap_nodes_online", "distributeai_bootstrap_jobs_announced_total",
                    "distributeai_bootstrap_jobs_certified_total"} <= names(body)

            def scraped():
                verified = prom.query("distributeai_jobs_verified_total")
                credits = prom.query("distributeai_credits")
                certified = prom.query('distributeai_bootstrap_jobs_certified_total{status="verified"}')
                # Every node paid has applied the certificate once the credits add up again; a node
                # left out of the verdict (not paid) has once it counts a second gossip message.
                gossip_in = prom.query("distributeai_gossip_messages_in_total")
                return (verified.get("node1", 0) >= 1 and len(prom.query("distributeai_peers")) == 3
                        and len(credits) == 3 and sum(credits.values()) == 300 and credits["node1"] < 100
                        and certified.get("bootstrap", 0) >= 1
                        and gossip_in.get("node2", 0) >= 2 and gossip_in.get("node3", 0) >= 2)
            wait_for(scraped, 60, "prometheus to scrape the verified job from every node and the bootstrap")
            # The queries below read each target's latest scrape, and a failed one (on loaded cores a
            # scrape may miss its timeout) hides a target's series until the next: every target up.
            wait_for(lambda: prom.query("up") == {name: 1 for name in targets}, 60, "every target up")

            def total(promql: str) -> float:
                return sum(prom.query(promql).values())

            assert prom.query("distributeai_jobs_verified_total") == {"node1": 1, "node2": 0, "node3": 0}
            assert prom.query("distributeai_jobs_announced_total")["node1"] == 1
            assert prom.query("distributeai_submit_to_verified_seconds_count") == {"node1": 1, "node2": 0, "node3": 0}
            latency = prom.query("histogram_quantile(0.5, distributeai_submit_to_verified_seconds_bucket)")["node1"]
            assert 0 < latency <= 60
            # 2 or 3 awards: a bid that misses the window is not waited for when nobody outranks
            # the bids in hand; a bid counts once accepted, and every award follows one.
            awarded = total("distributeai_jobs_awarded_total")
            assert 2 <= awarded <= 3 and total("distributeai_jobs_bid_total") >= awarded
            assert total("distributeai_jobs_executed_total") >= 2
            assert total('distributeai_sandbox_run_seconds_count{sandbox="process"}') >= 2
            assert prom.query("distributeai_jobs_failed_total") == {}  # no reason ever counted
            assert prom.query("distributeai_gossip_messages_out_total")["node1"] >= 2  # announce, certificate
            gossip_in = prom.query("distributeai_gossip_messages_in_total")
            assert gossip_in["node2"] >= 2 and gossip_in["node3"] >= 2, gossip_in  # announce, certificate
            assert all(v >= 2 for v in prom.query("distributeai_peers").values())  # at least the two other nodes
            reputation = prom.query("distributeai_reputation")
            assert set(reputation.values()) <= {0, 5} and list(reputation.values()).count(5) >= 2
            assert prom.query("distributeai_bootstrap_jobs_announced_total") == {"bootstrap": 1}
            assert prom.query("distributeai_bootstrap_nodes_online") == {"bootstrap": 3}
            # Every target was up (scrapes succeeded), and Prometheus listens on loopback only.
            # Every target was up (scrapes succeeded): checked before the queries above too.
            assert prom.query("up") == {name: 1 for name in targets}
            for promql in dashboard_queries():  # the dashboard's queries are valid PromQL
                prom.query(promql)
            flags = json.loads(get(prom.url + "/api/v1/status/flags")[2])["data"]
            assert flags["web.listen-address"] == f"127.0.0.1:{prom.port}"
        finally:
            prom.stop()
