"""Adaptive replication on a real network (issue 18): warm up, run adaptive jobs, plant a cheater.

`python -m distributeai.tools.adaptive_net --nodes 5 --jobs 50 --threshold 3 --json` starts its own
bootstrap and N node processes on 127.0.0.1 (`Devnet`, process sandbox), then:

1. warm-up: `threshold` replicate jobs with n = k = N (every node runs each and must agree, so
   every certificate compares N results and each node's consecutive-valid count in the job's
   runtime class reaches `threshold` on every node's ledger);
2. `jobs` adaptive jobs (`verification: adaptive`, `trust_threshold: threshold` in the signed spec:
   the only way a threshold is lowered), `concurrency` in flight, submitted round-robin; reports
   how many verified and how many executors each certificate's verdict rested on, by mode;
3. unless `--no-cheater`: a node made the one best-reputed live node (`plant_cheater`) is killed
   and started again on its own data directory as a cheat (tests/byzantine_node.py `wrong`: it
   reveals a wrong result for every job), keeping its identity and so its trust; then adaptive
   jobs with `spot_check_floor: 1.0` (every single run checked) are submitted from another node
   until one was awarded to the cheater alone: the spot check must catch it (escalation, the
   cheater dissenting, its count 0).

Everything is read from the nodes' own answers (`wait`, `info`, `reputation`); nothing is stubbed.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distributeai.consensus.codec import Identity
from distributeai.consensus.messages import JobSpec, sign
from distributeai.node.paths import key_path
from distributeai.p2p.identity import load_or_create_key

from .devnet import Devnet

JOB = {"image": "alpine:latest", "command": ("sh", "-c", "echo 'Hello' | sha256sum")}
BYZANTINE = Path(__file__).resolve().parent.parent / "tests" / "byzantine_node.py"


class AdaptiveNet:
    """A running devnet and the identities of its nodes, with the calls the phases need."""

    def __init__(self, net: Devnet) -> None:
        self.net = net
        secret = os.environ.get("DISTRIBUTEAI_PASSPHRASE", "").encode() or None
        self.identities = [Identity.from_seed(load_or_create_key(key_path(d), secret)) for d in net.node_dirs]

    def submit(self, i: int, **fields) -> dict:
        """Sign a job with node i's key, hand it to node i and wait for its verdict: the job view."""
        spec = JobSpec(submitter=self.identities[i].public_key, nonce=os.urandom(16),
                       created_ms=int(time.time() * 1000), name="adaptive", **JOB, **fields)
        answer = self.net.call(i, {"op": "submit", "signed_spec": sign(self.identities[i], spec).hex()})
        if "error" in answer:
            raise RuntimeError(f"submit refused: {answer['error']}")
        return self.net.call(i, {"op": "wait", "job_id": answer["job_id"], "timeout": 120}, timeout=150)

    def settle(self, certificates: int, timeout: float = 60) -> None:
        """Until every node holds `certificates` certificates and all their ledger views agree."""
        deadline = time.monotonic() + timeout
        while True:
            ledgers = [self.net.info(i)["ledger"] for i in range(len(self.identities))]
            if all(x["certificates"] >= certificates for x in ledgers) and len({x["view_digest"] for x in ledgers}) == 1:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"ledgers did not converge on {certificates} certificates: {ledgers}")
            time.sleep(0.2)  # polling the nodes' own view; each round is a fresh observation

    def trust(self, i: int, who: int) -> dict[str, int]:
        """Node i's consecutive-valid counts of node `who`, by runtime class (hex)."""
        peer = self.net.node_info[who]["peer_id"]
        return self.net.call(i, {"op": "reputation"}).get("trust", {}).get(peer, {})


def warm_up(an: AdaptiveNet, threshold: int) -> list[dict]:
    """`threshold` jobs that every node runs and agrees on (n = k = all nodes)."""
    n = len(an.identities)
    views = [an.submit(j % n, replicas=n, quorum=n, max_total_results=n) for j in range(threshold)]
    an.settle(len(views))
    return views


def adaptive_jobs(an: AdaptiveNet, jobs: int, threshold: int, concurrency: int, first: int = 0) -> list[dict]:
    n = len(an.identities)

    def one(j: int) -> dict:
        started = time.perf_counter()
        view = an.submit((first + j) % n, verification="adaptive", trust_threshold=threshold)
        view["latency_ms"] = (time.perf_counter() - started) * 1000
        return view

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(jobs)))


def plant_cheater(an: AdaptiveNet, threshold: int, certificates: int, attempts: int = 3) -> dict:
    """Plant a cheat where the protocol must award it a job alone, and let a spot check catch it.

    Bidders rank by reputation first, and a tie is settled among the bids in hand (the faster
    peer wins), so the cheat is made the one best-reputed live node: a spot-checked job (floor
    1.0) raises its trusted executor's and its checker's reputation above every other node's;
    the trusted one becomes the cheat (killed and started again on its own data directory as
    tests/byzantine_node.py `wrong`, keeping its identity and trust), and the checker, if it
    now ties with it, is stopped. Then adaptive jobs checked at every single run are submitted
    from another node until one was awarded to the cheat alone. `certificates`: how many every
    node holds now. The view of that job, the cheat's index and peer id, its trust before and
    after."""
    net = an.net
    n = len(an.identities)
    peers = {net.node_info[i]["peer_id"]: i for i in range(n)}
    gap = an.submit(0, verification="adaptive", trust_threshold=threshold, spot_check_floor_ppm=1_000_000)
    if gap.get("verification") != "spot_checked":
        raise RuntimeError(f"the spot-checked job ended {gap.get('status')} {gap.get('verification')}")
    an.settle(certificates + 1)
    cheater = gap["trusted"]
    checker = next(e["peer_id"] for e in gap["executors"] if e["peer_id"] != cheater)
    reputation = net.call(0, {"op": "reputation"})["reputation"]
    index = peers[cheater]
    gone = [peers[checker]] if reputation.get(checker) == reputation.get(cheater) else []
    submitter = next(i for i in range(n) if i != index and i not in gone)
    before = an.trust(submitter, index)
    for i in gone:
        net.kill_node(i)
    net.kill_node(index)
    net.programs[index] = [sys.executable, str(BYZANTINE), "wrong"]
    net.restart_node(index)
    wait_live(net, [i for i in range(n) if i not in gone])
    for _ in range(attempts):
        view = an.submit(submitter, verification="adaptive", trust_threshold=threshold, spot_check_floor_ppm=1_000_000)
        if view.get("trusted") == cheater:
            return {"view": view, "cheater": index, "peer_id": cheater, "trust_before": before,
                    "trust_after": an.trust(submitter, index)}
    raise RuntimeError(f"the cheater {cheater} was never awarded a job alone in {attempts} jobs")


def wait_live(net: Devnet, live: list[int], timeout: float = 60) -> None:
    """Until each node in `live` is connected to every other one and has a gossip mesh (as
    `Devnet.wait_connected`, for a network some of whose nodes were stopped)."""
    ids = {net.node_info[i]["peer_id"] for i in live}
    deadline = time.monotonic() + timeout
    while True:
        infos = {i: net.info(i) for i in live}
        if all(ids - {net.node_info[i]["peer_id"]} <= set(x["peers"]) and len(x["mesh_peers"]) >= min(len(live), 4)
               for i, x in infos.items()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the live nodes {live} did not reconnect within {timeout} s")
        time.sleep(0.1)  # polling the nodes' own view; each round is a fresh observation


def summarize(views: list[dict]) -> dict:
    statuses: dict[str, int] = {}
    modes: dict[str, int] = {}
    for v in views:
        statuses[v.get("status", "?")] = statuses.get(v.get("status", "?"), 0) + 1
        modes[str(v.get("verification"))] = modes.get(str(v.get("verification")), 0) + 1
    runs = [v.get("executors_run") or 0 for v in views]
    lat = [v["latency_ms"] for v in views if "latency_ms" in v]
    return {"jobs": len(views), "statuses": statuses, "modes": modes,
            "mean_executors": round(statistics.fmean(runs), 3) if runs else None,
            "latency_ms_p50": round(statistics.median(lat), 1) if lat else None}


def run(nodes: int = 5, jobs: int = 50, threshold: int = 3, concurrency: int = 4, cheater: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="dai-adaptive-") as root, \
            Devnet(Path(root) / "net", nodes=nodes, sandbox="process", log_level="warning") as net:
        net.start()
        net.wait_connected(timeout=60)
        an = AdaptiveNet(net)
        warm = warm_up(an, threshold)
        views = adaptive_jobs(an, jobs, threshold, concurrency)
        out = {"nodes": nodes, "threshold": threshold, "warm_up": summarize(warm), "adaptive": summarize(views)}
        if cheater:
            an.settle(len(warm) + len(views))
            caught = plant_cheater(an, threshold, len(warm) + len(views))
            v = caught["view"]
            out["cheater"] = {"status": v.get("status"), "verification": v.get("verification"),
                              "executors_run": v.get("executors_run"), "history": [h.get("event") for h in v.get("history", [])],
                              "trust_before": caught["trust_before"], "trust_after": caught["trust_after"]}
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--threshold", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-cheater", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    out = run(a.nodes, a.jobs, a.threshold, a.concurrency, not a.no_cheater)
    print(json.dumps(out, indent=None if a.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
