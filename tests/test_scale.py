"""Scale on one machine (issues 6 and 17): a bootstrap and 50 node processes on a WAN of network
namespaces, each process on its own /24 (tools/netns.py), every packet between two of them held
10-40 ms each way (plus up to 5 ms of jitter) by the userspace relay (tools/wanrelay.py).

One test, in phases, each timed and printed (`pytest -s tests/test_scale.py` shows the figures):

1. Start-up: 51 OS processes (`Devnet(hosts=...)`, process sandbox) until every node has printed
   its ready line, each listening on its own namespace's address. Each process imports libp2p
   (about 1 s of CPU), so on 2 cores this takes tens of seconds; it is not part of the discovery
   budget, which starts when the last node is up.
2. Discovery, within DISCOVERY_S (60 s) of that moment: every node has found every other through
   the DHT: node A has node B's real listen address (the one in B's ready line), either in the
   peerstore that A's requests dial from, filled by A's DHT discovery, or from a Kademlia lookup
   for B, which is what a request to B would run (`find_peers`, control API). Nodes start
   knowing only the bootstrap, and other nodes' addresses reach a node only in Kademlia
   answers (or from a peer that dialed it after finding it so). Once all 2,450 ordered pairs
   are found:
   - each node resolves all 49 others through `find_peers` (the control API's view of how the
     node's requests resolve a peer id): every answer must be the real address;
   - the DHT itself must answer at this size, not only what nodes remember: each node runs a
     fresh Kademlia lookup through the network for LOOKUPS_PER_NODE other nodes
     (`find_peers` with `"lookup": true`); each must converge on its target, which answers.
3. Idle CPU: the CPU seconds of all 51 processes (utime + stime, /proc/PID/stat) over a 10 s
   window with nothing to do; printed, and bounded so that a node that never stops working
   fails the test. The relay's own CPU is printed, not bounded.
4. Announcement reach: a job submitted at one node is stored by every other node, as observed
   gossip; the reach time is the latest node's local time of storing it minus the submitter's.
5. Jobs verify: that job (verified with the right output), then JOBS_AT_ONCE more submitted at
   once, JOBS_PER_SUBMITTER from each of SUBMITTERS nodes (issue 17, item 4); 3 replicas, quorum
   2; each reaches a verdict, a verified one with the right output from a quorum (how many
   verified is printed: see the comment at the check); then every node has applied every
   verified job's certificate (gossip). Time to verdict
   (submit -> verified as each submitting client sees it) is printed as p50/p99, not asserted:
   a figure of this machine, not a property of the protocol. The CPU of the 10 s after that is
   printed too: it includes the jobs' wind-down (executors whose work is no longer needed).

Needs root, `ip` and /dev/net/tun (tools/netns.py): CI has them; elsewhere the test skips.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from distributeai.tools.devnet import Devnet
from distributeai.tools.netns import Wan, unavailable
from distributeai.consensus.codec import Identity
from distributeai.consensus.jobfile import parse_job
from distributeai.consensus.messages import JobSpec, sign
from distributeai.node.paths import key_path
from distributeai.p2p.identity import load_or_create_key

from .netfixtures import DEMO_STDOUT
from .netfixtures import missing as required

NODES = 50
STARTUP_S = 240.0  # 51 processes importing libp2p on 2 cores: 23-65 s measured; 139-150 s beside three other 50-node runs
# Measured 10-19 s on 2 cores (18.8 s once nodes carried a block store and Bitswap); one fresh-clone
# CI run went past 30 s. A loose bound: it catches discovery that does not converge, not a slow machine.
# On the WAN (20-80 ms round trips, every connection set-up several of them) 55.7 s once, on a
# machine shared with three other 50-node runs.
DISCOVERY_S = 90.0
LOOKUPS_PER_NODE = 2
# Nodes running their fresh lookups at a time. A lookup waits for its slowest query (up to
# 10 s), so dozens at once on 2 busy cores made the odd one time out.
LOOKUP_NODES_AT_ONCE = 4
LOOKUP_WHEN_MISSING = 3
# A hang guard for the whole test (600 s): about 130-150 s when CI has the machine to itself.
# A safety net, not a figure: issue 6 asks that announcements reach all 50 (no time), and both
# waits that use it (announcement reach, certificates everywhere) are printed as measured.
REACH_S = 120.0
# Jobs submitted at once after the first one: issue 17, item 4 asks 20 from 10 submitters, and
# allows CI fewer, never under 10. Every node bids on every job, dialing the submitter if not
# connected to it (each node keeps about 8 connections of its own). On the WAN, beside other
# 50-node runs on the 2 cores, 20 at once took p50 27 s, p99 39 s to a verdict and 11 of the 20
# failed (executors unreachable 3 times); 10 keep CI's time near the loopback test's. The times
# are printed, never asserted.
SUBMITTERS = 10
JOBS_PER_SUBMITTER = 1
JOBS_AT_ONCE = SUBMITTERS * JOBS_PER_SUBMITTER
JOB_S = 120.0
IDLE_WINDOW_S = 10.0
# Idle: gossip heartbeats (1 s), yamux pings (30 s) and discovery rounds backing off towards one
# pull per node per 30 s. The bound is loose on purpose (a shared machine); it catches a node
# that never stops working.
IDLE_CPU_MAX = 0.5  # CPU seconds per second of wall time, all 51 processes together
DEMO_JOB = {"image": "alpine:latest", "command": ["sh", "-c", "echo 'Hello' | sha256sum"],
            "replicas": 3, "quorum": 2}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_window(pids: list[int]) -> float:
    """CPU seconds all `pids` spend over the next IDLE_WINDOW_S seconds, scaled to exactly it."""
    before, started = sum(cpu_seconds(p) for p in pids), time.monotonic()
    time.sleep(IDLE_WINDOW_S)  # the measurement window itself, not a synchronisation
    spent, window = sum(cpu_seconds(p) for p in pids) - before, time.monotonic() - started
    return spent * IDLE_WINDOW_S / window


def poll_until(check, timeout: float, what: str, pause: float = 0.2):
    """Call `check()`, which returns (what it saw, done), until done; AssertionError naming
    `what` and the last thing seen at the deadline. Each call observes the network afresh."""
    deadline = time.monotonic() + timeout
    while True:
        value, done = check()
        if done:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {value}")
        time.sleep(pause)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fifty_nodes_find_each_other_hear_announcements_and_verify_jobs(tmp_path):
    why = unavailable()
    if why:
        required(f"the 50-node test runs on a WAN of network namespaces: {why}")
    figures: dict[str, object] = {}
    began = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=16)
    wan = Wan([1] * (NODES + 1), log=tmp_path / "relay.log")  # the bootstrap's site, then each node's
    net = None
    try:
        wan.__enter__()  # closed in `finally`, after the nodes stopped
        figures["wan_s"] = round(time.monotonic() - began, 1)
        net = Devnet(tmp_path / "net", nodes=NODES, sandbox="process", log_level="warning", hosts=wan.hosts)
        net.start(timeout=STARTUP_S)
        up = time.monotonic()
        figures["startup_s"] = round(up - began, 1)
        pids = [p.pid for p in net.procs]
        ids = [n["peer_id"] for n in net.node_info]
        addrs = {n["peer_id"]: set(n["multiaddrs"]) for n in net.node_info}
        assert len(set(ids)) == NODES
        for i, n in enumerate(net.node_info):  # each on its own /24, never loopback
            assert all(a.startswith(f"/ip4/{wan.hosts[i + 1].ip}/tcp/") for a in n["multiaddrs"]), n

        # --- 2. discovery -------------------------------------------------------------------
        missing = {i: set(ids) - {ids[i]} for i in range(NODES)}
        looked_up = 0

        def resolve(i: int, lookup: bool, targets: list[str]) -> dict:
            return net.call(i, {"op": "find_peers", "peer_ids": targets, "lookup": lookup}, timeout=120)

        def found_by(i: int) -> tuple[set[str], int]:
            """The peers node i has found: those whose real address it knows, and, once its own
            discovery has left it at most LOOKUP_WHEN_MISSING unknown, those it resolves by a
            DHT lookup as a request to them would (asked only then, so that the check does
            not flood a network that is still discovering with lookups)."""
            if len(missing[i]) > LOOKUP_WHEN_MISSING:
                known = net.call(i, {"op": "peers"}, timeout=60)["peers"]
                return {p["peer_id"] for p in known if addrs.get(p["peer_id"], set()) & set(p["addrs"])}, 0
            answer = resolve(i, False, sorted(missing[i]))
            ok = {p for p, v in answer["found"].items() if addrs[p] & set(v["addrs"])}
            return ok, sum(1 for p in ok if answer["found"][p]["how"] == "lookup")

        def all_found():
            nonlocal looked_up
            todo = [i for i in range(NODES) if missing[i]]
            for i, (found, by_lookup) in zip(todo, pool.map(found_by, todo)):
                missing[i] -= found
                looked_up += by_lookup
            left = sum(len(m) for m in missing.values())
            return f"{left} of {NODES * (NODES - 1)} pairs not found, e.g. {_sample(missing)}", left == 0

        poll_until(all_found, DISCOVERY_S, "every node to find every other through the DHT", pause=0.5)
        figures["discovery_s"] = round(time.monotonic() - up, 1)
        figures["pairs_found_by_lookup"] = looked_up

        answers = list(pool.map(lambda i: resolve(i, False, [p for p in ids if p != ids[i]]), range(NODES)))
        for i, answer in enumerate(answers):
            assert answer["not_found"] == [], (i, answer["not_found"])
            wrong = {p: v for p, v in answer["found"].items() if not addrs[p] & set(v["addrs"])}
            assert not wrong, (i, wrong)
        hows: dict[str, int] = {}
        for answer in answers:
            for v in answer["found"].values():
                hows[v["how"]] = hows.get(v["how"], 0) + 1
        figures["resolved_pairs"] = hows

        rng = random.Random(4)
        targets = {i: rng.sample([p for p in ids if p != ids[i]], LOOKUPS_PER_NODE) for i in range(NODES)}
        started = time.monotonic()
        took: list[float] = []

        def timed_lookup(i: int) -> dict:
            t0 = time.monotonic()
            answer = resolve(i, True, targets[i])
            took.append(time.monotonic() - t0)
            return answer

        with ThreadPoolExecutor(max_workers=LOOKUP_NODES_AT_ONCE) as lookups:
            answers = list(lookups.map(timed_lookup, range(NODES)))
        figures["fresh_lookups_s"] = round(time.monotonic() - started, 1)
        figures["fresh_lookup_call_s"] = {"p50": round(_pct(took, 0.5), 2), "max": round(max(took), 2)}
        # A lookup has LOOKUP_TIMEOUT_S (10 s, p2p/discovery.py) and each of its rounds waits for
        # the slowest of 3 queries, most of them dials of several round trips: on the WAN under
        # load one can run out of time. What must hold is that the DHT answers, so a target not
        # found is looked up once more (counted, printed); twice not found fails.
        retried = 0
        for i, answer in enumerate(answers):
            if answer["not_found"]:
                retried += len(answer["not_found"])
                again = resolve(i, True, answer["not_found"])
                answer["found"].update(again["found"])
                answer["not_found"] = again["not_found"]
        figures["fresh_lookups_retried"] = retried
        for i, answer in enumerate(answers):
            assert answer["not_found"] == [], (i, answer["not_found"])
            assert {v["how"] for v in answer["found"].values()} == {"lookup"}
            assert all(addrs[p] & set(v["addrs"]) for p, v in answer["found"].items()), (i, answer)
        figures["fresh_lookups"] = NODES * LOOKUPS_PER_NODE

        # --- 3. idle CPU --------------------------------------------------------------------
        idle = cpu_window(pids)
        figures["idle_cpu_s_per_10s"] = round(idle, 2)
        figures["rss_mb_total"] = round(sum(rss_mb(p) for p in pids))
        assert idle / IDLE_WINDOW_S < IDLE_CPU_MAX, f"{idle:.1f} CPU s in {IDLE_WINDOW_S} s with nothing to do"

        # --- 4. announcement reach ----------------------------------------------------------
        identities = [Identity.from_seed(load_or_create_key(key_path(d))) for d in net.node_dirs]
        fields = parse_job(DEMO_JOB)

        def submit(i: int) -> tuple[str, float]:
            spec = JobSpec(submitter=identities[i].public_key, nonce=os.urandom(16),
                           created_ms=int(time.time() * 1000), **fields)
            answer = net.call(i, {"op": "submit", "signed_spec": sign(identities[i], spec).hex()})
            assert "job_id" in answer, answer
            return answer["job_id"], time.monotonic()

        def wait_verified(i: int, job_id: str, submitted: float) -> tuple[dict, float]:
            view = net.call(i, {"op": "wait", "job_id": job_id, "timeout": JOB_S}, timeout=JOB_S + 30)
            return view, time.monotonic() - submitted

        job_id, submitted = submit(0)
        first = pool.submit(wait_verified, 0, job_id, submitted)
        seen_at: dict[int, int] = {}

        def reached():
            todo = [i for i in range(1, NODES) if i not in seen_at]
            views = pool.map(lambda i: net.call(i, {"op": "status", "job_id": job_id}, timeout=60), todo)
            for i, view in zip(todo, views):
                if "created_ms" in view:
                    seen_at[i] = view["created_ms"]
            return f"{NODES - 1 - len(seen_at)} nodes have not stored the announcement", len(seen_at) == NODES - 1

        poll_until(reached, REACH_S, "the announcement to reach every node")
        origin = net.call(0, {"op": "status", "job_id": job_id})["created_ms"]
        figures["reach_s"] = {"p50": round(_pct(seen_at.values(), 0.5) - origin) / 1000,
                              "max": round(max(seen_at.values()) - origin) / 1000}

        # --- 5. jobs verify -----------------------------------------------------------------
        # The first job alone, then JOBS_AT_ONCE at once from SUBMITTERS other nodes.
        outcomes = [first.result()]
        submitters = [k * NODES // SUBMITTERS + 1 for k in range(SUBMITTERS)] * JOBS_PER_SUBMITTER
        with ThreadPoolExecutor(max_workers=JOBS_AT_ONCE) as jobs:
            submitted_jobs = list(jobs.map(submit, submitters))
            outcomes += list(jobs.map(lambda ij: wait_verified(ij[0], *ij[1]), zip(submitters, submitted_jobs)))
        # The first job ran alone: it must verify. Of the jobs at once, each must reach a verdict
        # (never hang), a verified one with the right output from a quorum; but every node bids
        # on every job and dials the submitter to do so, and the submitters dial their executors,
        # so on 2 shared cores an executor can time out as unreachable (3 times for one job of 20
        # on a loaded machine: `failed`, `too_many_errors`). That is the protocol working, not a
        # fault: how many verified is printed. Sampled bidding (issue 17, item 1) is what should
        # make all of them verify; then this can assert it.
        for k, (view, _) in enumerate(outcomes):
            assert view["status"] in (("verified",) if k == 0 else ("verified", "failed")), _story(view)
            if view["status"] == "verified":
                assert view["stdout"] == DEMO_STDOUT
                assert sum(e["agreed"] for e in view["executors"]) >= 2
            else:
                assert view["reason"], _story(view)
        at_once = [elapsed for _, elapsed in outcomes[1:]]
        figures["jobs_at_once"] = f"{JOBS_AT_ONCE} from {SUBMITTERS} submitters"
        figures["verified_at_once"] = sum(1 for view, _ in outcomes[1:] if view["status"] == "verified")
        figures["failed_at_once"] = [_story(view).splitlines()[0] for view, _ in outcomes[1:] if view["status"] != "verified"]
        figures["time_to_verdict_s"] = {"p50": round(_pct(at_once, 0.5), 2), "p99": round(_pct(at_once, 0.99), 2),
                                        "max": round(max(at_once), 2), "first_alone": round(outcomes[0][1], 2)}
        figures["bids_per_job"] = [view.get("bids") for view, _ in outcomes]
        job_ids = [view["job_id"] for view, _ in outcomes if view["status"] == "verified"]
        verified = set()

        def certified_everywhere():
            todo = [(i, j) for i in range(NODES) for j in job_ids if (i, j) not in verified]
            views = pool.map(lambda ij: net.call(ij[0], {"op": "status", "job_id": ij[1]}, timeout=60), todo)
            verified.update(ij for ij, view in zip(todo, views) if view.get("status") == "verified")
            left = len(todo) - sum(1 for ij in todo if ij in verified)
            return f"{left} (node, job) pairs without the certificate", left == 0

        poll_until(certified_everywhere, REACH_S, "every node to apply every certificate", pause=0.5)

        # --- after the jobs: their wind-down (printed only) ---------------------------------
        figures["cpu_s_in_10s_after_jobs"] = round(cpu_window(pids), 2)
        figures["connections_per_node"] = _spread([len(net.info(i)["peers"]) for i in range(NODES)])
    finally:
        stopping = time.monotonic()
        figures["relay_cpu_s"] = round(wan.relay_cpu_s(), 1)
        if net is not None:
            net.stop()
        pool.shutdown()
        wan.close()
        figures["relay"] = wan.relay_stats
        figures["teardown_s"] = round(time.monotonic() - stopping, 1)
        figures["total_s"] = round(time.monotonic() - began, 1)
        print("\nscale figures:", figures)


def _story(view: dict) -> str:
    """A job's outcome and history in a few lines, for a failure message."""
    t0 = view.get("created_ms", 0)
    lines = [f"job {view.get('job_id', '?')[:12]} {view.get('status')} {view.get('reason')!r}, "
             f"{view.get('bids')} bids"]
    lines += [f"  +{(h['at_ms'] - t0) / 1000:.2f} s {h['event']} {(h['peer_id'] or '')[-6:]} {h['detail'][:100]}"
              for h in view.get("history", [])]
    return "\n".join(lines)


def _sample(missing: dict[int, set[str]]) -> dict[int, int]:
    return {i: len(m) for i, m in list((i, m) for i, m in missing.items() if m)[:5]}


def _pct(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _spread(values: list[int]) -> str:
    ordered = sorted(values)
    return f"min {ordered[0]} median {ordered[len(ordered) // 2]} max {ordered[-1]}"
