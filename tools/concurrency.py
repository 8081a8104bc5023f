"""Jobs at once on a network of real node processes on 127.0.0.1 (issue 17, item 4): time to
verdict with sampled bidding (`node start --bid-sample-factor C`) against every node bidding (0).

    python -m distributeai.tools.concurrency --nodes 50 --jobs 20 --submitters 10 --factors 0,4

For each factor, in one sitting: a fresh `Devnet` (process sandbox, log level warning), every node
started with that factor; once each node's DHT routing table holds every other node (or
--discovery-s passes, reported), `--jobs` jobs (the demo job: 3 replicas, quorum 2) are signed by
`--submitters` nodes (spread over the network, jobs dealt round-robin) and submitted at once, one
thread each, over the control socket; each is waited for. Printed, one JSON object per factor:
verified count, time to verdict p50/p99/max (the submitter's own: its store's update time of the
verdict minus the job's creation), the client's submit-to-verdict wall time, bids, declines and
widenings per job, gossip messages and bids sent over the burst (all nodes' counters), the CPU
seconds of all processes over the burst, the machine's load average before and after, and where
the time of the slowest job went (its history: bids closed, awards, commits, reveals).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distributeai.consensus.codec import Identity
from distributeai.consensus.jobfile import parse_job
from distributeai.consensus.messages import JobSpec, sign
from distributeai.node.paths import key_path
from distributeai.p2p.identity import load_or_create_key
from distributeai.tools.devnet import Devnet

DEMO_JOB = {"image": "alpine:latest", "command": ["sh", "-c", "echo 'Hello' | sha256sum"], "replicas": 3, "quorum": 2}
COUNTERS = ("gossip_in", "gossip_out", "bids_sent", "declines_sent", "bids_received", "not_eligible", "widened",
            "widenings_in", "reannounced")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def totals(net: Devnet, pool: ThreadPoolExecutor) -> dict[str, int]:
    out = dict.fromkeys(COUNTERS, 0)
    for info in pool.map(net.info, range(len(net.node_dirs))):
        for k in COUNTERS:
            out[k] += info["counters"].get(k, 0)
    return out


def story(view: dict) -> list[str]:
    t0 = view.get("created_ms", 0)
    return [f"+{(h['at_ms'] - t0) / 1000:.2f}s {h['event']} {h['detail'][:60]}" for h in view.get("history", [])]


def phases(views: list[dict]) -> dict[str, list[float]]:
    """Seconds from each job's creation to the first of each event of its history: where the time went."""
    out: dict[str, list[float]] = {}
    for view in views:
        firsts: dict[str, int] = {}
        for h in view.get("history", []):
            firsts.setdefault(h["event"], h["at_ms"])
        for event, at in firsts.items():
            out.setdefault(event, []).append(round((at - view["created_ms"]) / 1000, 3))
    return out


def run(root: Path, nodes: int, jobs: int, submitters: int, factor: int, discovery_s: float) -> dict:
    figures: dict = {"factor": factor, "nodes": nodes, "jobs": jobs, "submitters": submitters}
    net = Devnet(root / f"factor{factor}", nodes=nodes, sandbox="process", log_level="warning",
                 extra_args=("--bid-sample-factor", str(factor)))
    pool = ThreadPoolExecutor(max_workers=max(16, jobs))
    try:
        began = time.monotonic()
        net.start(timeout=300)
        figures["startup_s"] = round(time.monotonic() - began, 1)
        began = time.monotonic()
        while True:  # polling the nodes' own view; each round is a fresh observation
            infos = list(pool.map(net.info, range(nodes)))
            short = sum(1 for i in infos if i["overlay"]["dht_peers"] < nodes - 1)
            if not short or time.monotonic() - began > discovery_s:
                break
            time.sleep(0.5)
        figures["discovery_s"] = round(time.monotonic() - began, 1)
        figures["nodes_short_of_full_table"] = short
        figures["network_size_estimates"] = sorted(i["network_size_estimate"] for i in infos)[::max(1, nodes // 10)]
        who = [k * nodes // submitters for k in range(submitters)]
        identities = {i: Identity.from_seed(load_or_create_key(key_path(net.node_dirs[i]))) for i in who}
        fields = parse_job(DEMO_JOB)
        signed = []
        for j in range(jobs):
            i = who[j % submitters]
            spec = JobSpec(submitter=identities[i].public_key, nonce=os.urandom(16),
                           created_ms=int(time.time() * 1000), **fields)
            signed.append((i, sign(identities[i], spec)))
        before, load_before = totals(net, pool), os.getloadavg()
        pids = [p.pid for p in net.procs]
        cpu_before = sum(cpu_seconds(p) for p in pids)

        def one(item: tuple[int, bytes]) -> tuple[dict, float]:
            i, data = item
            started = time.monotonic()
            answer = net.call(i, {"op": "submit", "signed_spec": data.hex()})
            if "job_id" not in answer:  # refused before it was announced: reported as such
                return {"status": "refused", "reason": answer, "elapsed_s": time.monotonic() - started}, 0.0
            view = net.call(i, {"op": "wait", "job_id": answer["job_id"], "timeout": 120}, timeout=150)
            return view, time.monotonic() - started

        burst = time.monotonic()
        outcomes = list(pool.map(one, signed))
        figures["burst_wall_s"] = round(time.monotonic() - burst, 2)
        figures["cpu_s"] = round(sum(cpu_seconds(p) for p in pids) - cpu_before, 1)
        after = totals(net, pool)
        figures["load_before"], figures["load_after"] = [round(x, 2) for x in load_before], [
            round(x, 2) for x in os.getloadavg()]
        views = [v for v, _ in outcomes]
        figures["refused"] = [v["reason"] for v in views if v["status"] == "refused"]
        views = [v for v in views if v["status"] != "refused"] or [{"status": "refused", "elapsed_s": 0.0}]
        verdict = [v["elapsed_s"] for v in views]
        wall = [w for _, w in outcomes]
        figures["verified"] = sum(1 for v in views if v["status"] == "verified")
        figures["statuses"] = sorted({v["status"] for v in views})
        figures["verdict_s"] = {"p50": pct(verdict, 0.5), "p99": pct(verdict, 0.99), "max": max(verdict)}
        figures["client_wall_s"] = {"p50": round(pct(wall, 0.5), 3), "p99": round(pct(wall, 0.99), 3)}
        figures["bids_per_job"] = {"p50": pct([v.get("bids", 0) for v in views], 0.5),
                                   "max": max(v.get("bids", 0) for v in views)}
        figures["widenings_per_job"] = sum(v.get("widenings", 0) for v in views) / len(views)
        figures["per_job"] = {k: round((after[k] - before[k]) / jobs, 1) for k in COUNTERS}
        figures["phases_p50_s"] = {event: pct(times, 0.5) for event, times in phases(views).items()}
        figures["errors_per_job"] = sum(1 for v in views for h in v.get("history", []) if h["event"] == "error") / jobs
        slowest = max(views, key=lambda v: v["elapsed_s"])
        figures["slowest"] = {"elapsed_s": slowest["elapsed_s"], "history": story(slowest)}
        return figures
    finally:
        net.stop()
        pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(".run/concurrency"))
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--submitters", type=int, default=10)
    parser.add_argument("--factors", default="0,4", help="bid sample factors to run, in order (0: every node bids)")
    parser.add_argument("--discovery-s", type=float, default=90.0)
    args = parser.parse_args()
    for factor in (int(f) for f in args.factors.split(",")):
        print(json.dumps(run(args.root, args.nodes, args.jobs, args.submitters, factor, args.discovery_s)), flush=True)


if __name__ == "__main__":
    main()
