"""A discrete-event simulation of a whole network, driving the protocol core the nodes run.

Pure: no sockets, no threads, one `random.Random(seed)`, time is virtual milliseconds; the same
configuration gives the same report but for `submitter_cpu_ms_per_job`, the one clock read
(`time.process_time` around the submitter's work), which never steers the simulation. It imports only `consensus`,
the pure `node.bidding` and `tools.simworld` (the mesh and the ledger views).

Real (the functions the daemon calls, on real signed bytes):
- every node has an Ed25519 `Identity`; specs, announcements, awards, commits, reveal requests,
  reveals and certificates are signed by their author and checked on receipt with
  `consensus.messages.verify` as node/submitting.py and node/executing.py do;
- the submitter is `consensus.submitter.SubmitterJob`: bid ranking, awards, replacements under
  BOINC's policy, commit-reveal, tally, certificate; its actions are carried out as
  node/submitting.py carries them out (an award that cannot be delivered is `award_undelivered`,
  deadlines are `tick`, offences fold into the submitter's own ledger);
- executors build their reveal and commit with `consensus.executor`; the bid decision is
  `node.bidding.decide`; announcements, widenings and certificates pass
  `consensus.gossip.check_gossip` (the nodes' own check, at difficulty 0: simulated identities
  prove no work); every node's reputation and credits are a real `consensus.ledger.Ledger`;
- sampled bidding (consensus/sampling.py): the submitter starts the job at
  `initial_share(N, replicas, sample_factor)`, N from `estimate_network_size` over the DHT keys
  (SHA-256 of each public key) closest to its own (`size_estimate="dht"`) or the true count;
  only nodes with `score(job_id, key) < share` consider the job (the same rule as `eligible`, which
  the real `SubmitterJob.receive_bid` applies to every bid); a `WidenBids` action is published as
  a real signed `Widen`, checked with `check_gossip` and `validate.widened_share`, and the newly
  eligible nodes consider the job when it reaches them. `sample_factor=0`: every node bids, as
  before sampling;
- Sybils behind established nodes: each bid and tick of a sampled job in bidding carries
  `outside_best` in its meta, fed through `apply_input` as node/submitting.py feeds it, computed
  by the same function (`submitter_rules.unbid_best`, outside the sample, the submitter
  included) over the submitter's connected peers (see the network below), so the real
  `strangers_ahead` widens a job whose n-th best bid is a stranger's while an established peer
  sits outside the sample; `sampling.strangers_ahead_widenings` counts those widenings. Neither
  `unbid_best` nor `undecided` is passed: the bid window never closes early and never waits for
  a better-reputed peer (`bids_wait`), it closes at its end;
- the submitter's CPU per job is measured (`time.process_time`) around the real `SubmitterJob`
  calls and the checks of what it receives;
- adaptive verification (`verification="adaptive"`, after `warmup` replicate jobs): each bid carries
  the bidder's CV as node/submitting.py passes it (meta "trust": `trust.bidder_trust` over the
  submitter's view: `Ledger.trust` in `runtime_class(spec, bid.platform)` before now, 0 for a
  bidder with a local offence; every simulated bid advertises no platform, so one class); `SubmitterJob` awards a trusted best bidder
  alone, signs the spot-check draw over its seal, awards a check, escalates; every certificate is
  checked as nodes check it, so the reported mode is `CheckedCertificate.mode`, the credits the
  ledger's (`effect_of`) and the CVs `Ledger.trust`'s.

Modelled:
- the sandbox: a run takes a lognormal time (mean `run_ms`); an honest run prints the SHA-256 of
  the job's command; a liar prints another line (its own, or with `collude` one shared by all
  liars), committed and revealed consistently, so only the tally can catch it; a strategic cheater
  (`strategic`) runs honestly except on a job it runs alone as its trusted executor (it is told:
  the worst case), where it prints its own wrong line with `cheat_prob`;
- the network: one-way latency is lognormal with mean `latency_ms` (sigma `latency_sigma`), drawn
  per direct message and once per gossip mesh link; a message to a node that is not a mesh
  neighbour first pays a connection set-up of `dial_rtts` round trips (TCP + Noise), charged to the
  bid that opens it; a request to an offline node fails after `request_timeout_ms`. A node's
  connected peers (`Transport.connected_peers`) are its online mesh neighbours;
- GossipSub: a random mesh of degree D (D_lo/D_hi as p2p/workarounds_pubsub.py sets them); a publish
  floods the mesh and every node forwards once to its mesh peers except the one it got it from and
  the origin, each hop adding `hop_ms` of validation (docs/libp2p.md: ~6 ms of CPU per message); every
  transmission is counted. Offline nodes leave the mesh at once and their neighbours graft
  replacements at once (GossipSub does it at the next 1 s heartbeat); IHAVE/IWANT is not modelled;
- churn: nodes leave at `churn_per_min` x nodes per simulated minute (a pick that is offline or is
  submitting a job is skipped: submitters stay up) and come back after an exponential downtime
  (mean `downtime_s`). A leaving node loses its runs; a returning node recovers like a restarted
  daemon: re-runs what was awarded and not committed (Executing.recover);
- ledgers: every node holds a certificate set (`simworld.CertificateSets`); gossip gives every
  online node each certificate, an offline node misses it. With `reconcile` on, a returning node
  reconciles with a random online peer (set reconciliation: each pulls the difference, every
  certificate it learns re-verified; messages and bytes counted, proportional to the difference,
  `simworld.reconcile_cost`), and every `reconcile_s` (0: never) each online node reconciles with a
  random online peer. After the run the report says how many distinct views remain, then brings
  every node back and reconciles in rounds until one view is left (`after_everyone_reconciled`).

Shortcuts for speed, each counted in the report so its cost can be priced:
- bids are real `Bid` messages fed to the real `SubmitterJob`, but with `sign_bids=False` they are
  neither signed nor verified (every simulated bidder signs honestly, so the check cannot change an
  outcome); `crypto.bids_unsigned` counts them;
- an announcement or a certificate is verified once, not once per receiving node (every node runs
  the same check on the same bytes); `crypto.*_checks_by_nodes` counts the checks the network makes;
- a certificate reaches the ledgers of all online nodes at the instant of publication rather than
  at arrival (at most the gossip spread time, under a second, early); a gossip's transmissions are
  counted as a flood over the online mesh (`Mesh.sends`), and arrival times are computed only for
  the nodes that act on it (the eligible ones: `Mesh.arrivals`), unless more than 1/16 of the
  nodes do (then one flood, `Mesh.spread`);
- a `Ledger` exists only per distinct certificate set asked for (`CertificateSets`): the fold is
  order-independent, so nodes holding the same certificates share one view;
- identities: every node's public key is computed at the start, its `Identity` (private key) only
  when it signs, and kept while cached.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from array import array
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from distributeai.consensus.adaptive import NO_PLATFORM, check_probability, runtime_class
from distributeai.consensus.codec import Identity, sha256
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.executor import make_commit, make_reveal
from distributeai.consensus.gossip import check_gossip
from distributeai.consensus.fields import PPM
from distributeai.consensus.ledger import GENESIS_CREDITS, effect_of
from distributeai.consensus.messages import (
    MAX_TOTAL_RESULTS, Announce, Award, Bid, Commit, JobSpec, Reveal, RevealRequest, Signed, Widen, job_id_of,
    sign, verify,
)
from distributeai.consensus.results import result_hash
from distributeai.consensus.sampling import SHARE_ALL, estimate_network_size, initial_share, score
from distributeai.consensus.submitter import (
    Finished, Penalize, PublishCertificate, RequestReveal, SendAward, SubmitterJob, Timing, WidenBids,
    apply_input, reannounce_after_ms,
)
from distributeai.consensus.submitter_rules import unbid_best
from distributeai.consensus.trust import bidder_trust
from distributeai.consensus.validate import widened_share

from distributeai.node.bidding import BidContext, Capacity, Decision, decide
from .simworld import MESH_DEGREE, CertificateSets, Mesh, lognormal_mu, reconcile_cost

EPOCH_MS = 1_700_000_000_000  # the virtual clock's origin, so that specs carry plausible times
# Copied from modules the simulator may not import (they pull in trio and libp2p);
# tests/test_simulation.py checks that they still agree.
OFFENCES = ("not_awarded", "late_commit")                  # node/submitting.py OFFENCES
PRICE = 1                                                  # node/agent.py NodeSettings.price
REQUEST_TIMEOUT_MS = 10_000                                # node/agent.py NodeSettings.request_timeout_s
SANDBOX = "docker"
IMAGE = "alpine:latest"
LIAR, STRATEGIC = 1, 2  # Simulation.liar: the kinds of dishonest node


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 10_000
    jobs: int = 200
    liars: float = 0.1             # fraction of nodes whose every result is wrong
    collude: bool = False          # liars share one wrong result (else each has its own)
    churn_per_min: float = 0.0     # leave attempts per simulated minute, as a fraction of all nodes
    downtime_s: float = 60.0       # mean time a node that left stays away
    latency_ms: float = 50.0       # mean one-way latency
    latency_sigma: float = 0.5     # lognormal shape
    hop_ms: float = 6.0            # per gossip hop: validation before forwarding
    dial_rtts: int = 2             # a new connection: TCP and Noise handshakes
    job_rate_per_s: float = 2.0    # Poisson arrivals of jobs, each from a random online node
    run_ms: float = 5000.0         # mean run time of one execution (lognormal, sigma 0.5)
    replicas: int = 3
    quorum: int = 2
    bid_probability: float = 1.0   # NOT what nodes do: 1.0 is the real rule (every node that fits bids)
    sign_bids: bool = False        # sign and verify every bid (slow at 10k nodes)
    request_timeout_ms: int = REQUEST_TIMEOUT_MS
    timing: Timing = field(default_factory=Timing)
    capacity: Capacity = field(default_factory=Capacity)
    genesis_credits: int = GENESIS_CREDITS
    # Stop this long after the last job is due (warm-up included), even if jobs are unfinished
    # (they are reported): a fixed horizon cut a long warm-up short before any measured job.
    max_virtual_s: float = 3600.0
    sample_factor: int = 4         # c: about c * replicas eligible nodes per job; 0: every node bids
    size_estimate: str = "dht"     # the N of initial_share: "dht" (estimate_network_size) or "true"
    reconcile: bool = True         # reconcile certificate sets on return (and every reconcile_s)
    reconcile_s: float = 30.0      # every online node reconciles with a random peer this often; 0: never
    verification: str = "replicate"  # the measured jobs' JobSpec.verification: replicate | adaptive
    trust_threshold: int = 10      # JobSpec.trust_threshold: the CV a bidder needs to run a job alone
    spot_check_floor: float = 0.05  # JobSpec.spot_check_floor_ppm / 1e6: the least chance of a spot check
    strategic: float = 0.0         # fraction of nodes that are honest until trusted, then cheat (cheat_prob)
    cheat_prob: float = 0.5        # a strategic cheater's chance of a wrong result on a job it runs alone
    warmup: int = 0                # replicate jobs run before the `jobs` measured ones (trust is earned)
    seed: int = 1


@dataclass
class Execution:
    """An award at an executor, as node/executing.py keeps it in its store."""

    job: "SimJob"
    status: str = "awarded"  # awarded | running | committed | revealed
    reveal: bytes | None = None
    cheat: bool = False  # a strategic cheater's wrong result


@dataclass
class SimJob:
    index: int
    job_id: bytes
    submitter: int
    machine: SubmitterJob | None  # dropped once finished (its bids are the bulk of the memory)
    spec: JobSpec
    announce: bytes
    honest_hash: bytes
    submitted_ms: float
    seen: bytearray | None  # who has the announcement (dropped once finished)
    share: int = SHARE_ALL  # the eligible share the nodes know (the announcement's, widened)
    scores: array | None = None  # each node's sampling.score for this job, while it runs and is sampled
    start_share: int = SHARE_ALL
    eligible_at_announce: int = 0  # online eligible nodes the announcement was for
    widenings: int = 0
    strangers_widenings: int = 0  # of those, with n bids in hand: strangers ahead (submitter_rules)
    reannounced: int = 0  # re-announcements in a row (reannounce_after_ms)
    cpu_s: float = 0.0  # the submitter's CPU in SubmitterJob and its checks of what it received
    decisions: dict = field(default_factory=dict)
    bids: int = 0
    bids_in_window: int = 0
    tick_at: int | None = None
    status: str = ""
    reason: str = ""
    correct: bool = False
    verdict_ms: float | None = None
    history: list = field(default_factory=list)  # the SubmitterJob's, kept when it is dropped
    certificate: bytes | None = None
    trust: dict = field(default_factory=dict)  # bidder -> the CV passed with its bid (adaptive jobs)
    alone: int | None = None  # the executor awarded alone (an adaptive job's trusted bidder)
    runs: int = 0  # executor runs that completed (committed), whether revealed or not
    checked: Any = None  # the certificate as verify_certificate checked it


def _image_present(_: str) -> bool:
    return True  # every simulated node has the job's image


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


class Simulation:
    def __init__(self, cfg: SimConfig) -> None:
        if cfg.nodes < max(2, cfg.replicas) or cfg.jobs < 1:
            raise ValueError("need at least as many nodes as replicas (and 2), and one job")
        if cfg.verification not in ("replicate", "adaptive") or cfg.warmup < 0 or cfg.liars + cfg.strategic > 1:
            raise ValueError("verification is replicate or adaptive, warmup >= 0, liars + strategic <= 1")
        self.cfg = cfg
        self.rng = rng = random.Random(cfg.seed)
        n = self.n = cfg.nodes
        self.seeds = [rng.randbytes(32) for _ in range(n)]
        self.pks = [Identity.from_seed(seed).public_key for seed in self.seeds]
        self.signers: dict[int, Identity] = {}
        self.index = {pk: v for v, pk in enumerate(self.pks)}
        # The DHT's keys (SHA-256 of the public key, as Kademlia's are uniform), sorted: a node's
        # closest keys are what it knows for `estimate_network_size`.
        self.dht = sorted(sha256(pk) for pk in self.pks)
        self.estimates: dict[int, int] = {}
        # 0 honest, LIAR (every result wrong: its own, or with `collude` the colluders' shared one),
        # STRATEGIC (honest until it runs an adaptive job alone, then wrong with `cheat_prob`).
        self.liar = bytearray(n)
        bad = rng.sample(range(n), min(n, round(cfg.liars * n) + round(cfg.strategic * n)))
        for k, v in enumerate(bad):
            self.liar[v] = LIAR if k < round(cfg.liars * n) else STRATEGIC
        self.cheats: Counter[int] = Counter()  # wrong results each strategic cheater returned
        self.online = bytearray(b"\1") * n
        self.epoch = [0] * n         # bumped when a node leaves: its pending runs die with it
        self.pinned = [0] * n        # jobs a node is submitting (it stays up meanwhile)
        self.running = [0] * n       # node/executing.py `running`: awarded runs, queued ones included
        self.active = [0] * n        # runs holding one of the node's max_running slots
        self.queued: dict[int, deque] = {}
        self.execs: dict[int, dict[bytes, Execution]] = {}
        self.mu = lognormal_mu(cfg.latency_ms, cfg.latency_sigma)
        self.run_mu = lognormal_mu(cfg.run_ms, 0.5)
        self.mesh = Mesh(n, rng, self._lat, cfg.hop_ms)
        self.views = CertificateSets(n, cfg.genesis_credits, self.online)
        self.jobs: list[SimJob] = []
        self.heap: list[tuple[float, int, Callable, tuple]] = []
        self.seq = 0
        self.now = float(EPOCH_MS)
        self.finished = 0
        self.gossip: Counter[str] = Counter()
        self.direct: Counter[str] = Counter()
        self.local: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.declined: Counter[str] = Counter()
        self.crypto: Counter[str] = Counter()
        self.churn: Counter[str] = Counter()
        self.spread_ms: list[float] = []
        self.reach: list[float] = []
        self.awards_to: Counter[int] = Counter()
        self.reconciled: Counter[str] = Counter()

    # --- the event loop ---------------------------------------------------------------------------

    def _at(self, t: float, fn: Callable, *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, fn, args))

    def _lat(self) -> float:
        return math.exp(self.rng.gauss(self.mu, self.cfg.latency_sigma))

    def _id(self, v: int) -> Identity:
        """Node v's identity, made when it first signs."""
        ident = self.signers.get(v)
        if ident is None:
            ident = self.signers[v] = Identity.from_seed(self.seeds[v])
        return ident

    def _timed(self, job: SimJob, fn: Callable, *args: Any) -> Any:
        """fn(*args), its CPU time counted as the submitter's for this job."""
        started = time.process_time()
        try:
            return fn(*args)
        finally:
            job.cpu_s += time.process_time() - started

    def run(self) -> dict:
        cfg = self.cfg
        self._at(self.now, self._submit, 0)
        if cfg.churn_per_min > 0:
            self._at(self.now, self._churn)
        if cfg.reconcile and cfg.reconcile_s > 0:
            self._at(self.now + cfg.reconcile_s * 1000, self._reconcile_round)
        horizon = EPOCH_MS + ((cfg.warmup + cfg.jobs) / cfg.job_rate_per_s + cfg.max_virtual_s) * 1000
        while self.heap and self.finished < cfg.warmup + cfg.jobs:
            t, _, fn, args = heapq.heappop(self.heap)
            if t > horizon:
                break
            self.now = t
            fn(*args)
        return self.report()

    # --- the submitter (node/submitting.py) ---------------------------------------------------

    def _submit(self, i: int) -> None:
        cfg, rng = self.cfg, self.rng
        if i + 1 < cfg.warmup + cfg.jobs:
            self._at(self.now + rng.expovariate(cfg.job_rate_per_s) * 1000, self._submit, i + 1)
        s = rng.randrange(self.n)
        while not self.online[s]:
            s = rng.randrange(self.n)
        now = int(self.now)
        command = ("sh", "-c", f"echo job-{i} | sha256sum")
        spec = JobSpec(submitter=self.pks[s], nonce=rng.randbytes(16), created_ms=now, name=f"sim-{i}",
                       image=IMAGE, command=command, replicas=cfg.replicas, quorum=cfg.quorum,
                       max_total_results=min(2 * cfg.replicas, MAX_TOTAL_RESULTS),
                       verification=cfg.verification if i >= cfg.warmup else "replicate",
                       trust_threshold=cfg.trust_threshold, spot_check_floor_ppm=round(cfg.spot_check_floor * PPM))
        signed_spec = sign(self._id(s), spec)
        self.crypto["signs"] += 1
        out = self._stdout(command, -1)
        honest = result_hash(0, False, out, False, stdout_size=len(out))  # as make_reveal states it
        job = SimJob(i, job_id_of(signed_spec), s, None, spec, b"", honest, self.now, bytearray(self.n))
        self.jobs.append(job)
        if not self.views.of(s).can_pay(spec):  # Submitting.submit refuses it locally
            self._finished(job, "failed", "insufficient_credits (refused by the submitter's node)")
            return
        job.share = job.start_share = self._initial_share(s)
        job.machine = SubmitterJob(self._id(s), signed_spec, spec, started_ms=now, timing=cfg.timing, share=job.share)
        job.announce = sign(self._id(s), Announce(signed_spec, (f"/sim/{s}",), b"", job.share))
        self.crypto["signs"] += 1
        checked = check_gossip(job.announce, self.pks[s], now, 0)  # once; every receiver runs this check on the same bytes
        assert checked.share == job.share
        self.crypto["verifies"] += 2
        self.pinned[s] += 1
        if job.share < SHARE_ALL:
            job_id = job.job_id
            job.scores = array("I", (score(job_id, pk) for pk in self.pks))
        job.seen[s] = 1
        if self._eligible(job, s):
            self._consider(job, s, self.now)  # the submitter may run its own job (Submitting.submit)
        self._publish_announce(job, "announce")
        self._schedule_tick(job)
        self._at(self.now + reannounce_after_ms(0), self._reannounce, job)

    def _initial_share(self, s: int) -> int:
        """The share the submitter announces: about c * replicas of its estimate of the network."""
        cfg = self.cfg
        if cfg.sample_factor <= 0:
            return SHARE_ALL
        if cfg.size_estimate == "true":
            size = self.n
        else:
            size = self.estimates.get(s)
            if size is None:
                own = sha256(self.pks[s])
                at = bisect_left(self.dht, own)
                near = self.dht[max(0, at - 40):at + 41]  # the XOR-closest keys are among the nearest in order
                size = self.estimates[s] = estimate_network_size(own, near)
        return initial_share(size, cfg.replicas, cfg.sample_factor)

    def _eligible(self, job: SimJob, v: int, below: int = 0) -> bool:
        """Node v may bid at the share it knows (`sampling.eligible`, from the job's score table),
        and was not already eligible below `below`."""
        return job.scores is None and not below or job.scores is not None and below <= job.scores[v] < job.share

    def _publish_announce(self, job: SimJob, kind: str) -> None:
        """Gossip the announcement: every online node gets it and drops a repeat (insert_job
        refuses it: no second bid); the eligible ones among those new to it consider the job."""
        seen, online = job.seen, self.online
        fresh = [v for v in range(self.n) if online[v] and not seen[v]]
        for v in fresh:
            seen[v] = 1
        targets = [v for v in fresh if self._eligible(job, v)]
        if kind == "announce":
            job.eligible_at_announce = len(targets) + self._eligible(job, job.submitter)
        self._gossip(job, kind, targets)

    def _gossip(self, job: SimJob, kind: str, targets: list[int]) -> None:
        """A job's gossip from its submitter: transmissions counted over the whole online mesh,
        and each target node considers the job when the message reaches it."""
        online = sum(self.online)
        self.gossip[kind] += self.mesh.sends(self.online)
        self.crypto[f"{kind}_checks_by_nodes"] += online - 1
        s = job.submitter
        if len(targets) > self.n // 16:
            order, _ = self.mesh.spread(s, self.now)
            wanted = set(targets)
            arrivals = {v: t for t, v in order if v in wanted}
        else:
            arrivals = self.mesh.arrivals(s, targets, self.now)
        if targets:
            self.reach.append(len(arrivals) / len(targets))
        if arrivals:
            self.spread_ms.append(max(arrivals.values()) - self.now)
        for v in sorted(arrivals, key=arrivals.get):
            self._consider(job, v, arrivals[v])

    def _widen(self, job: SimJob, share: int) -> None:
        """WidenBids: a signed Widen, checked as every node checks it; the newly eligible consider."""
        s, now = job.submitter, int(self.now)
        raw = sign(self._id(s), Widen(job.job_id, share, now))
        self.crypto["signs"] += 1
        old = job.share
        job.share = widened_share(check_gossip(raw, self.pks[s], now, 0), self.pks[s], old)
        self.crypto["verifies"] += 1
        job.widenings += 1
        seen, online = job.seen, self.online
        self._gossip(job, "widen", [v for v in range(self.n) if online[v] and seen[v] and self._eligible(job, v, old)])

    def _reannounce(self, job: SimJob) -> None:
        if job.machine is None:
            return
        if job.machine.wants_bids:
            job.reannounced += 1
            self._publish_announce(job, "reannounce")
        else:
            job.reannounced = 0
        self._at(self.now + reannounce_after_ms(job.reannounced), self._reannounce, job)

    def _on_bid(self, job: SimJob, v: int, sent_ms: int) -> None:
        m = job.machine
        if m is None:
            self.rejected["job_finished"] += 1
            return
        cap = self.cfg.capacity
        bid = Bid(m.job_id, self.pks[v], PRICE, cap.cpu_millis, cap.memory_mb, (SANDBOX,), sent_ms)
        if self.cfg.sign_bids:
            raw = sign(self._id(v), bid)
            signed = self._timed(job, verify, raw, Bid)
            self.crypto["signs"] += 1
            self.crypto["verifies"] += 1
        else:
            signed = Signed(bid, self.pks[v], b"")
            self.crypto["bids_unsigned"] += 1
        in_window = m.state == "bidding"
        view = self.views.of(job.submitter)
        meta = {"reputation": view.reputation_of(self.pks[v])} | self._outside(job, view)
        if job.spec.verification == "adaptive":
            meta["trust"] = job.trust[v] = self._timed(job, bidder_trust, view, job.spec, bid, int(self.now))
        try:
            actions = self._timed(job, apply_input, m, "bid", signed, meta, int(self.now))
        except RemoteProtocolError as exc:
            self.rejected[exc.reason] += 1
            return
        job.bids += 1
        job.bids_in_window += in_window
        if actions:  # without one, a bid brings no deadline forward: SubmitterJob adds deadlines only
            self._act(job, actions)  # with awards and reveal requests, or when starved, which a bid ends

    def _on_commit(self, job: SimJob, raw: bytes) -> None:
        m = job.machine
        signed = self._timed(job, verify, raw, Commit)
        self.crypto["verifies"] += 1
        if m is None:
            self.rejected["job_finished"] += 1
            return
        earlier = m.commits.get(signed.msg.executor)
        if earlier is not None and earlier.raw == signed.raw:
            return  # a re-sent commit already applied
        try:
            actions = self._timed(job, m.receive_commit, signed, int(self.now))
        except RemoteProtocolError as exc:
            self.rejected[exc.reason] += 1
            if exc.reason in OFFENCES:
                self.views.apply_offence(job.submitter, signed.signer)
            return
        self._act(job, actions)

    def _on_reveal(self, job: SimJob, v: int, raw: bytes) -> None:
        signed = self._timed(job, verify, raw, Reveal)
        self.crypto["verifies"] += 1
        if job.machine is None or signed.signer != self.pks[v]:
            self.rejected["job_finished" if job.machine is None else "wrong_signer"] += 1
            return
        try:
            actions = self._timed(job, job.machine.receive_reveal, signed, int(self.now))
        except RemoteProtocolError as exc:
            self.rejected[exc.reason] += 1
            return
        self._act(job, actions)

    def _undelivered(self, job: SimJob, v: int) -> None:
        if job.machine is not None:
            self._act(job, self._timed(job, job.machine.award_undelivered, self.pks[v], int(self.now)))

    def _tick(self, job: SimJob, due: int) -> None:
        if job.machine is None or job.tick_at != due:
            return  # finished, or superseded by an earlier deadline
        job.tick_at = None
        nxt = job.machine.next_deadline_ms()
        if nxt is not None and nxt <= self.now:
            meta = self._outside(job, self.views.of(job.submitter))
            self._act(job, self._timed(job, apply_input, job.machine, "tick", b"", meta, int(self.now)))
        else:
            self._schedule_tick(job)

    def _outside(self, job: SimJob, view) -> dict:
        """The meta node/submitting.py adds to a bid or tick of a sampled job in bidding:
        `outside_best`, the best reputation in the submitter's view (`view`) among its connected
        peers (its online mesh neighbours) and itself that are outside the job's sample and have
        not bid (`submitter_rules.unbid_best`, the node's function)."""
        m = job.machine
        if m is None or m.state != "bidding" or m.share >= SHARE_ALL:
            return {}
        s, online, pks = job.submitter, self.online, self.pks
        peers = [pks[w] for w in self.mesh.adj[s] if online[w]]
        return {"outside_best": unbid_best(m, peers, view.reputation_of, b"", outside=True)}

    def _schedule_tick(self, job: SimJob) -> None:
        due = job.machine.next_deadline_ms() if job.machine is not None else None
        if due is not None and (job.tick_at is None or due < job.tick_at):
            job.tick_at = due
            self._at(max(due, self.now), self._tick, job, due)

    def _act(self, job: SimJob, actions: list) -> None:
        s = job.submitter
        if job.machine is not None and job.machine.trusted is not None:
            job.alone = self.index[job.machine.trusted]  # the trusted bidder, awarded alone
        for a in actions:
            if isinstance(a, SendAward):
                self.crypto["signs"] += 1
                e = self.index[a.executor]
                self.awards_to[e] += 1
                self._send(s, e, "award", self._on_award, job, e, a.award, self.now)
            elif isinstance(a, RequestReveal):
                self.crypto["signs"] += 1
                e = self.index[a.executor]
                self._send(s, e, "reveal_request", self._on_reveal_request, job, e, a.request)
            elif isinstance(a, PublishCertificate):
                self.crypto["signs"] += 1
                self._publish_certificate(job, a.certificate)
            elif isinstance(a, Penalize):
                self.views.apply_offence(s, a.executor)
            elif isinstance(a, WidenBids):
                m = job.machine
                job.strangers_widenings += m.state == "bidding" and len(m.bids) >= self.cfg.replicas
                self._widen(job, a.share)
            elif isinstance(a, Finished):
                honest = a.tally is not None and a.tally.result_hash == job.honest_hash
                self._finished(job, a.status, a.reason, a.status == "verified" and honest)
        self._schedule_tick(job)

    def _publish_certificate(self, job: SimJob, raw: bytes) -> None:
        checked = check_gossip(raw, self.pks[job.submitter], int(self.now), 0)  # once; every receiver runs this check on the same bytes
        self.crypto["verifies"] += 2 + len(checked.awards) + len(checked.reveals)
        self.gossip["certificate"] += self.mesh.sends(self.online)
        self.crypto["certificate_checks_by_nodes"] += sum(self.online) - 1
        self.views.publish(checked, len(raw))  # every online node holds it now
        job.certificate = raw
        job.checked = checked

    def _finished(self, job: SimJob, status: str, reason: str, correct: bool = False) -> None:
        job.status, job.reason, job.correct = status, reason, correct
        job.verdict_ms = self.now - job.submitted_ms
        if job.machine is not None:
            job.history = job.machine.history
            self.pinned[job.submitter] -= 1
        job.machine = job.seen = job.scores = None
        self.finished += 1

    # --- the network ------------------------------------------------------------------------------

    def _send(self, src: int, dst: int, kind: str, fn: Callable, *args: Any) -> None:
        """A direct request: to the node itself without the network (Agent.deliver), else with latency."""
        if src == dst:
            self.local[kind] += 1
            self._at(self.now, fn, *args)
        else:
            self.direct[kind] += 1
            self._at(self.now + self._lat(), fn, *args)

    # --- executors (node/executing.py) ----------------------------------------------------------

    def _consider(self, job: SimJob, v: int, t: float) -> None:
        """`Executing.consider`: bid if `decide` says so; the bid reaches the submitter later."""
        cfg = self.cfg
        s = job.submitter
        if cfg.bid_probability < 1 and v != s and self.rng.random() >= cfg.bid_probability:
            self.declined["not sampled (--bid-probability)"] += 1
            return
        # decide() is pure: memoized on its inputs.
        can_pay = self.views.of(v).can_pay(job.spec)
        key = (can_pay, self.running[v])
        decision: Decision | None = job.decisions.get(key)
        if decision is None:
            decision = job.decisions[key] = decide(BidContext(
                job.spec, cfg.capacity, self.running[v], True, _image_present, submitter_can_pay=can_pay,
                gpu_ok=not job.spec.gpu))
        if not decision.bid:
            self.declined[decision.reason] += 1
            return
        if v == s:
            self.local["bid"] += 1
            self._at(t, self._on_bid, job, v, int(t))
            return
        self.direct["bid"] += 1
        lat = self._lat()
        if v not in self.mesh.adj[s]:
            lat *= 1 + 2 * cfg.dial_rtts  # no connection yet: handshakes first
        self._at(t + lat, self._on_bid, job, v, int(t))

    def _on_award(self, job: SimJob, e: int, raw: bytes, sent: float) -> None:
        if not self.online[e]:  # the submitter's request fails after its timeout
            self.lost["award"] += 1
            self._at(max(self.now, sent + self.cfg.request_timeout_ms), self._undelivered, job, e)
            return
        signed = verify(raw, Award)
        self.crypto["verifies"] += 1
        award: Award = signed.msg
        if award.executor != self.pks[e] or signed.signer != job.spec.submitter or (job.seen is not None
                                                                                    and not job.seen[e]):
            self.rejected["bad_award"] += 1
            self._at(self.now + self._lat(), self._undelivered, job, e)
            return
        execs = self.execs.setdefault(e, {})
        if award.job_id in execs:
            return  # a repeated award changes nothing
        ex = execs[award.job_id] = Execution(job)
        if self.liar[e] == STRATEGIC and job.alone == e and job.trust.get(e, 0) >= job.spec.trust_threshold:
            # Trusted and awarded alone (a cheater knows when it is: the worst case): cheat with cheat_prob.
            ex.cheat = self.rng.random() < self.cfg.cheat_prob
            self.cheats[e] += ex.cheat
        self._start_run(e, ex)

    def _start_run(self, e: int, ex: Execution) -> None:
        ex.status = "running"
        self.running[e] += 1
        if self.active[e] < self.cfg.capacity.max_running:
            self.active[e] += 1
            self._at(self.now + math.exp(self.rng.gauss(self.run_mu, 0.5)), self._run_done, e, ex, self.epoch[e])
        else:
            self.queued.setdefault(e, deque()).append(ex)

    def _stdout(self, command: tuple[str, ...], v: int, cheat: bool = False) -> bytes:
        """The modelled run's output: honest, a liar's own wrong line, or the colluders' shared one;
        a strategic cheater's own wrong line when it cheats."""
        text = "\0".join(command)
        if v >= 0 and self.liar[v] == STRATEGIC:
            text += f"\0cheat {v}" if cheat else ""
        elif v >= 0 and self.liar[v]:
            text += "\0collude" if self.cfg.collude else f"\0lie {v}"
        return sha256(text.encode()).hex().encode() + b"  -\n"

    def _run_done(self, e: int, ex: Execution, epoch: int) -> None:
        if epoch != self.epoch[e]:
            return  # the node left while running: the run died with the process
        self.running[e] -= 1
        self.active[e] -= 1
        waiting = self.queued.get(e)
        if waiting:
            nxt = waiting.popleft()
            self.active[e] += 1
            self._at(self.now + math.exp(self.rng.gauss(self.run_mu, 0.5)), self._run_done, e, nxt, epoch)
        job = ex.job
        job.runs += 1
        ex.reveal = make_reveal(self._id(e), job.job_id, 0, False, self._stdout(job.spec.command, e, ex.cheat),
                                sandbox=SANDBOX)
        rh = verify(ex.reveal, Reveal).msg.result_hash  # as Executing.make_commit reads it back
        commit = make_commit(self._id(e), job.job_id, rh)
        self.crypto["signs"] += 2
        self.crypto["verifies"] += 1
        ex.status = "committed"
        self._send(e, job.submitter, "commit", self._on_commit, job, commit)

    def _on_reveal_request(self, job: SimJob, e: int, raw: bytes) -> None:
        if not self.online[e]:
            self.lost["reveal_request"] += 1  # the submitter waits out the reveal window
            return
        signed = verify(raw, RevealRequest)
        self.crypto["verifies"] += 1
        ex = self.execs.get(e, {}).get(signed.msg.job_id)
        if (ex is None or signed.msg.executor != self.pks[e] or signed.signer != job.spec.submitter
                or ex.status not in ("committed", "revealed")):
            self.rejected["not_committed"] += 1
            return
        ex.status = "revealed"
        self._send(e, job.submitter, "reveal", self._on_reveal, job, e, ex.reveal)

    # --- churn ------------------------------------------------------------------------------------

    def _churn(self) -> None:
        cfg = self.cfg
        self._at(self.now + self.rng.expovariate(cfg.churn_per_min * self.n / 60_000), self._churn)
        v = self.rng.randrange(self.n)
        if not self.online[v] or self.pinned[v]:
            self.churn["skipped"] += 1
            return
        self.views.leave(v)
        self.online[v] = 0
        self.epoch[v] += 1
        self.running[v] = self.active[v] = 0
        self.queued.pop(v, None)
        self.mesh.leave(v, self.online)
        self.churn["left"] += 1
        self._at(self.now + self.rng.expovariate(1 / (cfg.downtime_s * 1000)), self._come_back, v)

    def _come_back(self, v: int) -> None:
        """Back online: rejoin the mesh and recover like a restarted daemon (Executing.recover)."""
        self.online[v] = 1
        self.mesh.join(v, self.online)
        self.views.rejoin(v)
        self.churn["returned"] += 1
        if self.cfg.reconcile:
            self._reconcile(v, self._random_online(v), "on_return")
        # A finished run's commit left in the same instant, so there is no unsent commit to re-send.
        for ex in self.execs.get(v, {}).values():
            if ex.status in ("awarded", "running"):
                self.churn["runs_recovered"] += 1
                self._start_run(v, ex)

    # --- ledgers: set reconciliation ---------------------------------------------------------------

    def _random_online(self, v: int) -> int:
        """A random online peer other than v (v itself if there is none)."""
        for _ in range(64):
            w = self.rng.randrange(self.n)
            if w != v and self.online[w]:
                return w
        return v

    def _reconcile(self, v: int, w: int, kind: str, sets: tuple[int, int] | None = None) -> None:
        """v and w reconcile their certificate sets; messages and bytes counted (simworld.reconcile_cost
        plus the certificates moved), every certificate learned re-verified (counted)."""
        if v == w:
            return
        views = self.views
        sv, sw = sets if sets is not None else (views.set_of(v), views.set_of(w))
        learned_v, learned_w = views.reconcile(v, w, (sv, sw) if sets is not None else None)
        messages, size = reconcile_cost(learned_v + learned_w, max(sv.bit_count(), sw.bit_count()))
        r = self.reconciled
        r[f"{kind}"] += 1
        r["messages"] += messages + (learned_v > 0) + (learned_w > 0)  # the certificates ride one answer each way
        if learned_v or learned_w:
            size += views.bytes_of(sv ^ sw)
            r["with_difference"] += 1
            r["certificates_pulled"] += learned_v + learned_w
            self.crypto["certificate_checks_by_reconciliation"] += learned_v + learned_w
        r["bytes"] += size

    def _reconcile_round(self) -> None:
        """Every online node reconciles with a random online peer, from the sets as they stood at the
        round's start (a round is simultaneous: nothing spreads two hops in one)."""
        self._at(self.now + self.cfg.reconcile_s * 1000, self._reconcile_round)
        self._round("periodic")

    def _round(self, kind: str) -> None:
        views = self.views
        nodes = [v for v in range(self.n) if self.online[v]]
        before = {v: views.set_of(v) for v in nodes}
        for v in nodes:
            w = self._random_online(v)
            if w != v:
                self._reconcile(v, w, kind, (before[v], before[w]))

    def _converge(self) -> dict:
        """After the run: every node comes back (reconciling on return), then rounds of periodic
        reconciliation until every node holds the same certificates. Reports the rounds and what
        they cost; changes nothing the report read before."""
        if not self.cfg.reconcile:
            return {}
        cost = Counter(self.reconciled)
        for v in range(self.n):
            if not self.online[v]:
                self.online[v] = 1
                self.views.rejoin(v)
                self._reconcile(v, self._random_online(v), "on_return")
        rounds = 0
        while self.views.distinct(range(self.n))[0] > 1 and rounds < 64:
            self._round("periodic")
            rounds += 1
        spent = Counter(self.reconciled)
        spent.subtract(cost)
        sets, views = self.views.distinct(range(self.n))
        return {"rounds": rounds, "distinct_sets": sets, "distinct_views_with_local_offences": views,
                "distinct_view_digests": self._digests(), "messages": spent["messages"], "bytes": spent["bytes"],
                "certificates_pulled": spent["certificates_pulled"]}

    def _digests(self, limit: int = 200) -> int | None:
        """Distinct `Ledger.view_digest()` values over the distinct certificate sets (without local
        offences), if consensus/ledger.py has it and there are at most `limit` sets; else None."""
        from distributeai.consensus.ledger import Ledger

        if not hasattr(Ledger, "view_digest"):
            return None
        sets = {self.views.set_of(v) for v in range(self.n)}
        if len(sets) > limit:
            return None
        return len({self.views.ledger_of(bits).view_digest() for bits in sets})

    # --- the report -------------------------------------------------------------------------------

    def _verification(self, done: list[SimJob]) -> dict:
        """How the finished jobs were verified, from their certificates as every node checks them
        (`CheckedCertificate.mode`), and what they cost in runs and credits (`ledger.effect_of`:
        the ledger pays each agreeing executor, so a single run costs one price, a check two)."""
        cfg = self.cfg
        certified = [j for j in done if j.checked is not None]
        n = max(1, len(done))
        modes = Counter(j.checked.mode for j in certified)
        verified = [j for j in certified if j.status == "verified"]
        paid = {j.job_id: sum(t.amount for t in effect_of(j.checked, 0).transfers) for j in verified}
        credits = list(paid.values())
        by_mode = {}
        for mode in sorted(modes):
            js = [j for j in certified if j.checked.mode == mode]
            ms = [j.verdict_ms for j in js]
            mode_paid = [paid[j.job_id] for j in js if j.job_id in paid]
            by_mode[mode] = {"jobs": len(js), "runs_per_job": round(sum(j.runs for j in js) / len(js), 3),
                             "executors_in_certificate_mean": round(sum(len(j.checked.reveals) for j in js) / len(js), 3),
                             "verified_wrong": sum(1 for j in js if j.status == "verified" and not j.correct),
                             "credits_per_verified_job": round(sum(mode_paid) / len(mode_paid), 3) if mode_paid else None,
                             "time_to_verdict_ms": {"p50": _p(ms, 50), "p95": _p(ms, 95)}}
        out = {
            "share_single": round(modes["single"] / n, 4),
            "share_spot_checked": round(modes["spot_checked"] / n, 4),
            "share_replicated": round(modes["replicated"] / n, 4),
            "escalated": sum(1 for j in certified if j.checked.trusted is not None and j.checked.mode == "replicated"),
            "wrong_verdict_rate": round(sum(1 for j in verified if not j.correct) / n, 5),
            "executors_in_certificate_mean": round(sum(len(j.checked.reveals) for j in certified) / max(1, len(certified)), 3),
            "credits_per_verified_job": round(sum(credits) / len(credits), 3) if credits else None,
            "by_mode": by_mode,
        }
        if self.jobs:  # CVs over every certificate, in the one runtime class of every simulated job
            view, cls = self.views.ledger_of((1 << self.views.count) - 1), runtime_class(self.jobs[0].spec, NO_PLATFORM)
            cvs = [view.trust(self.pks[v], cls) for v in self.awards_to]
            out["trusted_executors_at_end"] = sum(1 for c in cvs if c >= cfg.trust_threshold)
            out["cv_max_at_end"] = max(cvs, default=0)
        return out

    def _strategic(self) -> dict | None:
        """Strategic cheaters, in certificate-key order (the fold's): the wrong verdicts certified
        with a cheater's result before it is caught, i.e. before a verified certificate in which it
        dissents on a job it ran alone (its CV resets to 0 there). A caught cheater that earns trust
        again starts a new count: one figure per catch. Warm-up included (a cheater cheats only on
        adaptive jobs, so there it is honest)."""
        cfg = self.cfg
        cheaters = [v for v in range(self.n) if self.liar[v] == STRATEGIC]
        if not cheaters:
            return None
        certs = sorted((j.checked.certificate.created_ms, j.job_id, j) for j in self.jobs
                       if j.checked is not None and j.status == "verified")
        since: Counter[int] = Counter()  # wrong verdicts since the cheater was last caught
        catches: list[int] = []  # per catch, the wrong verdicts before it
        wrong = 0
        for _, _, j in certs:
            tally = j.checked.tally
            for who in tally.agreeing:
                c = self.index[who]
                if self.liar[c] == STRATEGIC and not j.correct:
                    since[c] += 1
                    wrong += 1
            for who in tally.dissenting:
                c = self.index[who]
                if self.liar[c] == STRATEGIC and j.alone == c:
                    catches.append(since.pop(c, 0))
        caught = {self.index[w] for j in self.jobs if j.checked is not None and j.alone is not None
                  for w in j.checked.tally.dissenting if w == self.pks[j.alone] and self.liar[j.alone] == STRATEGIC}
        alone = {j.alone for j in self.jobs if j.alone is not None}
        cvs = [j.trust.get(j.alone, 0) for j in self.jobs if j.alone is not None and self.liar[j.alone] == STRATEGIC]
        cv_mean = round(sum(cvs) / len(cvs), 1) if cvs else None
        floor_ppm = round(cfg.spot_check_floor * PPM)
        at_large = [n for n in since.values() if n]
        return {
            "cheaters": len(cheaters), "cheat_prob": cfg.cheat_prob,
            "ran_alone": sum(1 for c in cheaters if c in alone),
            "cheated": sum(1 for c in cheaters if self.cheats[c]), "wrong_results": sum(self.cheats.values()),
            "wrong_verdicts": wrong,
            "caught": len(caught), "catches": len(catches),
            "wrong_verdicts_before_caught_mean": round(sum(catches) / len(catches), 3) if catches else None,
            "wrong_verdicts_before_caught": dict(sorted(Counter(catches).items())),
            # Every wrong verdict over every catch: the same expectation without the bias of the
            # finite run (a cheater still at large has its count cut short, and is not in the mean).
            "wrong_verdicts_per_catch": round(wrong / len(catches), 3) if catches else None,
            "not_caught_yet": len(at_large),
            "wrong_verdicts_not_caught_yet_mean": round(sum(at_large) / len(at_large), 3) if at_large else None,
            "expected_wrong_before_caught": round(expected_wrong_before_caught(
                cfg.trust_threshold, floor_ppm, cfg.cheat_prob), 3),
            # The CV cheaters ran alone at (warm-up replication raises it past the threshold), and
            # the expectation from there.
            "cv_alone_mean": cv_mean,
            "expected_wrong_before_caught_at_cv_alone_mean": None if cv_mean is None else round(
                expected_wrong_before_caught(round(cv_mean), floor_ppm, cfg.cheat_prob), 3),
        }

    def report(self) -> dict:
        """What happened to the measured jobs (after the `warmup` ones; message, crypto, ledger and
        churn counters cover the whole run, warm-up included)."""
        cfg = self.cfg
        jobs = self.jobs[cfg.warmup:]
        n_jobs = len(jobs) or 1
        done = [j for j in jobs if j.status]
        statuses = Counter(j.status for j in done)
        verified_wrong = sum(1 for j in done if j.status == "verified" and not j.correct)
        failed_reasons = Counter(j.reason for j in done if j.status == "failed")
        events = Counter()
        errors = Counter()
        replaced_jobs = 0
        for j in done:
            kinds = Counter(h[1] for h in j.history)
            events.update(kinds)
            replaced_jobs += kinds["replacement"] > 0
            errors.update(h[3].split()[0] for h in j.history if h[1] == "error")
        verdicts = [j.verdict_ms for j in done if j.certificate is not None]  # not jobs refused locally
        bids = [j.bids for j in done]
        gossip_total = sum(self.gossip.values())
        direct_total = sum(self.direct.values())
        awarded = sum(self.awards_to.values())
        liar_awards = sum(c for v, c in self.awards_to.items() if self.liar[v])
        rnd = lambda x, d=1: None if x is None else round(x, d)  # noqa: E731
        announced = [j for j in jobs if j.announce]
        n_ann = len(announced) or 1
        cpu = sorted(j.cpu_s * 1000 for j in announced)
        sets_all, views_all = self.views.distinct(range(self.n))
        sets_online, _ = self.views.distinct(v for v in range(self.n) if self.online[v])
        ledgers = {"distinct_sets_at_end": sets_all, "distinct_sets_online_at_end": sets_online,
                   "distinct_views_with_local_offences": views_all, "distinct_view_digests": self._digests(),
                   "certificates": self.views.count, "ledgers_built": self.views.builds,
                   "certificate_folds": self.views.folds, "reconciliation": dict(self.reconciled)}
        churn = dict(self.churn) | {"offline_at_end": self.n - sum(self.online)}
        crypto = dict(self.crypto)
        ledgers["after_everyone_reconciled"] = self._converge()  # last: it brings every node back
        return {
            "parameters": {k: getattr(cfg, k) for k in (
                "nodes", "jobs", "liars", "collude", "churn_per_min", "downtime_s", "latency_ms", "latency_sigma",
                "hop_ms", "dial_rtts", "job_rate_per_s", "run_ms", "replicas", "quorum", "bid_probability",
                "sign_bids", "sample_factor", "size_estimate", "reconcile", "reconcile_s", "verification",
                "trust_threshold", "spot_check_floor", "strategic", "cheat_prob", "warmup", "seed")}
            | {"bid_window_ms": cfg.timing.bid_window_ms, "sampled_bid_window_ms": cfg.timing.sampled_bid_window_ms,
               "mesh_degree": MESH_DEGREE},
            "sampling": {
                "initial_share_mean": rnd(sum(j.start_share for j in announced) / n_ann / SHARE_ALL, 6),
                "estimated_nodes_mean": rnd(sum(self.estimates.values()) / len(self.estimates))
                if self.estimates else None,
                "eligible_at_announce_mean": rnd(sum(j.eligible_at_announce for j in announced) / n_ann),
                "widenings_per_job": rnd(sum(j.widenings for j in announced) / n_ann, 3),
                "strangers_ahead_widenings": sum(j.strangers_widenings for j in announced),
                "jobs_widened": sum(1 for j in announced if j.widenings)},
            "submitter_cpu_ms_per_job": {"mean": rnd(sum(cpu) / len(cpu) if cpu else None, 3),
                                         "p50": rnd(percentile(cpu, 50), 3), "max": rnd(max(cpu, default=None), 3)},
            "jobs": {"submitted": len(jobs), "finished": len(done), "unfinished": len(jobs) - len(done),
                     "verified_correct": sum(1 for j in done if j.correct), "verified_wrong": verified_wrong,
                     "failed": statuses["failed"], "failed_reasons": dict(failed_reasons),
                     "nondeterministic": statuses["nondeterministic"]},
            "share_correct": round(sum(1 for j in done if j.correct) / n_jobs, 4),
            "runs_per_job": round(sum(j.runs for j in done) / max(1, len(done)), 3),
            "verification": self._verification(done),
            "strategic": self._strategic(),
            "time_to_verdict_ms": {"p50": rnd(percentile(verdicts, 50)), "p95": rnd(percentile(verdicts, 95)),
                                   "p99": rnd(percentile(verdicts, 99)), "max": rnd(max(verdicts, default=None))},
            "messages_per_job": {
                "gossip": round(gossip_total / n_jobs, 1), "direct": round(direct_total / n_jobs, 1),
                "gossip_by_kind": {k: round(c / n_jobs, 1) for k, c in sorted(self.gossip.items())},
                "direct_by_kind": {k: round(c / n_jobs, 2) for k, c in sorted(self.direct.items())},
                "local_by_kind": {k: round(c / n_jobs, 2) for k, c in sorted(self.local.items())},
                "lost_to_offline_nodes": dict(self.lost)},
            "bids_per_job": {"received_mean": rnd(sum(bids) / len(bids) if bids else None),
                             "received_min": min(bids, default=None), "received_max": max(bids, default=None),
                             "in_bid_window_mean": rnd(sum(j.bids_in_window for j in done) / max(1, len(done))),
                             "declined": dict(self.declined)},
            "gossip_spread_ms": {"p50": rnd(percentile(self.spread_ms, 50)), "p99": rnd(percentile(self.spread_ms, 99)),
                                 "min_reach": rnd(min(self.reach, default=None), 4)},
            "replacements": {"total": events["replacement"], "jobs_with_replacement": replaced_jobs,
                             "slot_errors": dict(errors)},
            "executors": {"awards": awarded, "distinct": len(self.awards_to),
                          "most_awards_one_node": max(self.awards_to.values(), default=0),
                          "share_of_awards_to_liars": round(liar_awards / awarded, 4) if awarded else None},
            "churn": churn,
            "rejected": dict(self.rejected),
            "crypto": crypto,
            "ledgers": ledgers,
            "virtual_time_s": round((self.now - EPOCH_MS) / 1000, 3),
        }


def _p(values: list[float], p: float) -> float | None:
    v = percentile(values, p)
    return None if v is None else round(v, 1)


def expected_wrong_before_caught(cv: int, floor_ppm: int, cheat_prob: float, horizon: int = 100_000) -> float:
    """The expected wrong verdicts a strategic cheater gets certified before a spot check catches it,
    starting trusted at `cv`, if every job it runs is a single-run adaptive job: it cheats with
    `cheat_prob` (caught with the check's probability p(cv) = adaptive.check_probability, else one
    wrong verdict) and otherwise runs honestly (a check then raises its CV by one, lowering p to the
    floor). W(c) = q(1 - p)/p + (1 - q) W(c + 1), and W = (1 - p)/p once p is the floor; with no
    floor the sum is cut at `horizon`."""
    q = cheat_prob
    if q <= 0:
        return 0.0
    top = cv
    while check_probability(top, floor_ppm) > floor_ppm / PPM and top < cv + horizon:
        top += 1
    p = check_probability(top, floor_ppm)
    w = (1 - p) / p if p > 0 else math.inf
    for c in range(top - 1, cv - 1, -1):
        p = check_probability(c, floor_ppm)
        w = q * (1 - p) / p + (1 - q) * w
    return w


def simulate(cfg: SimConfig) -> dict:
    return Simulation(cfg).run()
