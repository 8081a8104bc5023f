"""The bootstrap: a well-known DHT seed that also watches the jobs topic and serves statistics.

It takes no part in awarding or verifying jobs. It counts only what a node would accept: every
message goes through `consensus.gossip.check_gossip`, the nodes' own check, at the network's
proof-of-work difficulty (`BootstrapConfig.pow_difficulty`, which must be the nodes'), so its
figures cannot be inflated by junk, relayed certificates or identities without their work; a
message a node would refuse is dropped and counted in `rejected` by the node's reason.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, OrderedDict, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from distributeai.consensus.certificate import CheckedCertificate
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.gossip import check_gossip
from distributeai.consensus.ledger import REPUTATION_START, UNTRUSTED, Ledger
from distributeai.consensus.names import JOBS_TOPIC
from distributeai.consensus.pow import DEFAULT_DIFFICULTY
from distributeai.consensus.sampling import SHARE_ALL
from distributeai.consensus.validate import MAX_SPEC_AGE_MS, CheckedAnnounce, CheckedWiden, widened_share
from distributeai.p2p.identity import load_or_create_key, peer_id_from_public_key, public_key_from_peer_id
from distributeai.p2p.overlay import open_overlay
from distributeai.p2p.startup import check_free, check_listen_free, listen_failed, lock_dir, make_dir

from distributeai.bootstrap.api import bootstrap_app
from distributeai.bootstrap.jobview import announce_view, certificate_view, spec_summary
from distributeai.bootstrap.metrics import BootstrapMetrics
from distributeai.bootstrap.series import Series
from distributeai.p2p.http import serve_app

log = logging.getLogger("distributeai.bootstrap")
RECENT_JOBS = 100  # jobs kept with their detail (a few kilobytes each)
FAILURE_REASONS_SHOWN = 5  # the most common reasons among the recent failed jobs
RATE_WINDOW_S = 60.0  # jobs_per_minute counts what arrived in this window
MAX_TRACKED_PEERS = 10_000  # last-seen times kept; the oldest are forgotten first
NODES_SHOWN = 200  # rows of nodes_detail in /api/stats
PEER_WATCH_INTERVAL_S = 1.0  # how often connected peers are marked as seen


@dataclass(frozen=True)
class BootstrapConfig:
    data_dir: Path
    listen: str = "/ip4/127.0.0.1/tcp/4001"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # The proof-of-work bits the network's nodes demand of an announcer (`node start
    # --pow-difficulty`): an announcement counts only if it proves them.
    pow_difficulty: int = DEFAULT_DIFFICULTY
    # The key's seed when `bootstrap start` unlocked an encrypted key file; None: read it (raw) here.
    seed: bytes | None = field(default=None, repr=False, compare=False)


class Stats:
    """What the bootstrap has verified, folded as it arrives: counts, the last RECENT_JOBS jobs
    (each a summary in `jobs` and a bounded detail in `details`: spec, executors, bids, declines,
    timeline; `jobview.py`), the last hour minute by minute (`series`), a `Ledger` over the
    certificates (so reputation and credits read as on any node), and when each identity was last
    seen (connected, or authoring a message).

    Times shown to people are wall-clock seconds (`time.time()`, or `now` where a method takes
    it); `per_minute` uses `time.monotonic()`.
    """

    def __init__(self, pow_difficulty: int = DEFAULT_DIFFICULTY) -> None:
        self.pow_difficulty = pow_difficulty  # the network's: what every node demands of announcers
        self.announced = 0
        self.widened = 0  # widenings of sampled bidding (consensus/sampling.py) taken as a node takes them
        self.certified: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.jobs: dict[str, dict] = {}  # job id (hex) -> summary, as /api/stats shows it
        self.details: dict[str, dict] = {}  # job id (hex) -> detail, as /api/jobs/ID shows it
        self.series = Series()
        self.order: deque[str] = deque()
        self.started = time.time()
        self.ledger = Ledger()
        self.jobs_run: Counter[str] = Counter()  # peer id -> certificates in which it revealed
        self.last_seen: OrderedDict[str, float] = OrderedDict()  # peer id -> wall time, oldest first
        self.announce_times: deque[float] = deque()  # monotonic, the last RATE_WINDOW_S
        self.certify_times: deque[float] = deque()
        self.announced_ids: dict[bytes, int] = {}  # job id -> its spec's created_ms, while fresh

    def _job(self, job_id: str) -> dict:
        if job_id not in self.jobs:
            self.jobs[job_id] = {"job_id": job_id, "status": "announced"}
            self.order.append(job_id)
            while len(self.order) > RECENT_JOBS:
                gone = self.order.popleft()
                self.jobs.pop(gone, None)
                self.details.pop(gone, None)
        return self.jobs[job_id]

    def seen(self, peer_id: str, at: float | None = None) -> None:
        """`peer_id` was connected or authored a verified message at `at` (now by default)."""
        self.last_seen[peer_id] = time.time() if at is None else at
        self.last_seen.move_to_end(peer_id)
        while len(self.last_seen) > MAX_TRACKED_PEERS:
            self.last_seen.popitem(last=False)

    @staticmethod
    def _tick(times: deque[float]) -> None:
        now = time.monotonic()
        times.append(now)
        _prune(times, now)

    def known(self, kind: str, job_id: bytes) -> bool:
        """`check_gossip`'s replay rule over what the bootstrap has counted: an announcement's job
        id known at all (announced or certified), a certificate's job certified before."""
        if kind == "certificate":
            return job_id in self.ledger.applied  # every certificate folded in, not only recent ones
        return job_id in self.announced_ids or job_id in self.ledger.applied

    def _remember_announced(self, job_id: bytes, created_ms: int, now_ms: int) -> None:
        """Remember an announced job id while its spec is fresh: an older one is `stale` before
        its replay is looked for, so forgetting it changes no verdict and bounds the memory."""
        self.announced_ids[job_id] = created_ms
        horizon = now_ms - MAX_SPEC_AGE_MS
        while self.announced_ids:
            oldest = next(iter(self.announced_ids))
            if self.announced_ids[oldest] >= horizon:
                break
            del self.announced_ids[oldest]

    def observe(self, data: bytes, from_peer: str, now: float | None = None) -> None:
        """Count one gossip message by `from_peer` if a node would accept it (`check_gossip` at
        this bootstrap's difficulty, with `known` as its memory), else count its rejection. `now`:
        wall-clock seconds (the current time by default)."""
        now = time.time() if now is None else now
        try:
            now_ms = int(now * 1000)
            checked = check_gossip(data, public_key_from_peer_id(from_peer), now_ms, self.pow_difficulty,
                                   seen=self.known)
            if isinstance(checked, CheckedAnnounce):
                self._announced(checked, from_peer, now, now_ms)
            elif isinstance(checked, CheckedWiden):
                self._widened(checked)
            else:
                self._certified(checked, now, now_ms)
        except RemoteProtocolError as exc:
            self.rejected[exc.reason] += 1
            log.debug("rejected gossip from %s: %s", from_peer, exc)  # counted in `rejected`; a flood must not flood the log
            if from_peer in self.last_seen:  # known, and pubsub checked it wrote this junk
                self.seen(from_peer, now)
        else:
            self.seen(from_peer, now)

    def _announced(self, ann: CheckedAnnounce, from_peer: str, now: float, now_ms: int) -> None:
        self._remember_announced(ann.job_id, ann.spec.created_ms, now_ms)
        job_id = ann.job_id.hex()
        job = self._job(job_id)
        self.announced += 1
        self._tick(self.announce_times)
        self.series.announced(now)
        spec = spec_summary(ann.spec)
        job.update(name=spec["name"], image=spec["runs"], submitter=from_peer, replicas=ann.spec.replicas,
                   quorum=ann.spec.quorum, share=ann.share, announced_at=now, updated_at=now)
        if job["status"] == "announced":  # a certificate seen first keeps its richer detail
            self.details[job_id] = {"spec": spec, **announce_view(ann.spec)}

    def _widened(self, widen: CheckedWiden) -> None:
        """A widening counts, and sets the job's `share`, as a node takes it (node/eligibility.py):
        of a recent job (`unknown_job`), by its submitter (`wrong_signer`), growing the share (`replay`)."""
        job = self.jobs.get(widen.job_id.hex())
        submitter = public_key_from_peer_id(job["submitter"]) if job is not None and "submitter" in job else None
        if submitter is None:
            raise RemoteProtocolError("unknown_job", "widen of a job not announced here")
        job["share"] = widened_share(widen, submitter, job.get("share", SHARE_ALL))
        self.widened += 1

    def _certified(self, checked: CheckedCertificate, now: float, now_ms: int) -> None:
        # The ledger remembers every certificate it folded in, also those of jobs that have left
        # the recent list, so no certificate is counted twice.
        # A claimed trust the fold does not support is counted as a node counts it and shown as
        # rejected; the certificate joins the set all the same (its effects are credits only).
        self.ledger.apply_certificate(checked, now_ms)
        rejected = self.ledger.untrusted(checked)
        if rejected is not None:
            self.rejected[UNTRUSTED] += 1
        cert = checked.certificate
        self.certified[cert.status] += 1
        self._tick(self.certify_times)
        for executor in checked.reveals:
            self.jobs_run[peer_id_from_public_key(executor)] += 1
        job_id = cert.job_id.hex()
        job = self._job(job_id)
        seen_at = job.get("announced_at")
        verdict_s = round(now - seen_at, 3) if isinstance(seen_at, (int, float)) else None
        self.series.certified(cert.status, now, verdict_s)
        spec = spec_summary(checked.spec)
        summary, detail = certificate_view(checked, rejected)
        job.update(summary, name=spec["name"], image=spec["runs"], submitter=spec["submitter"],
                   replicas=checked.spec.replicas, quorum=checked.spec.quorum, certified_at=now,
                   verdict_s=verdict_s, updated_at=now)
        self.details[job_id] = {"spec": spec, **detail}

    def failure_reasons(self) -> list[dict]:
        """The most common reasons among the recent failed jobs, with their counts."""
        counts = Counter(j.get("reason") or "no reason given" for j in self.jobs.values() if j["status"] == "failed")
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [{"reason": r, "count": n} for r, n in ranked[:FAILURE_REASONS_SHOWN]]

    def job_detail(self, job_id: str) -> dict | None:
        """A recent job's summary with its detail under "detail" (spec, executors, bids,
        declines, timeline), by its id or a unique prefix of at least 8 hex digits."""
        job_id = job_id.lower()
        if job_id not in self.jobs:
            found = [j for j in self.jobs if j.startswith(job_id)] if len(job_id) >= 8 else []
            if len(found) != 1:
                return None
            job_id = found[0]
        return {**self.jobs[job_id], "detail": self.details.get(job_id, {})}

    def per_minute(self) -> dict[str, int]:
        now = time.monotonic()
        _prune(self.certify_times, now)
        _prune(self.announce_times, now)
        return {"certified": len(self.certify_times), "announced": len(self.announce_times)}

    def nodes_detail(self, connected: set[str], self_id: str) -> list[dict]:
        """Every identity seen (connected, authoring, or revealing in a certificate) but us:
        online ones first, then the most recently seen; at most NODES_SHOWN."""
        ids = (set(self.last_seen) | set(self.jobs_run) | connected) - {self_id}
        rows = []
        for pid in ids:
            key = public_key_from_peer_id(pid)
            rows.append({
                "peer_id": pid,
                "online": pid in connected,
                "reputation": self.ledger.reputation_of(key) if key else REPUTATION_START,
                "credits": self.ledger.balance(key) if key else self.ledger.genesis,
                "jobs_run": self.jobs_run.get(pid, 0),
                "last_seen": self.last_seen.get(pid),
            })
        rows.sort(key=lambda r: (not r["online"], -(r["last_seen"] or 0), -r["jobs_run"], r["peer_id"]))
        return rows[:NODES_SHOWN]


def _prune(times: deque[float], now: float) -> None:
    while times and times[0] <= now - RATE_WINDOW_S:
        times.popleft()


async def run_bootstrap(config: BootstrapConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the bootstrap until cancelled. What stops its start is a one-line `StartError`
    (p2p/startup.py): a data dir in use by another bootstrap or not creatable, an address taken."""
    make_dir(config.data_dir)
    lock_fd = lock_dir(config.data_dir, "bootstrap")
    try:
        check_listen_free("--listen", config.listen)
        check_free("--http", config.http_host, config.http_port)
        await _run_bootstrap(config, task_status)
    finally:
        os.close(lock_fd)


@asynccontextmanager
async def _listening_overlay(seed: bytes, listen: str):
    """open_overlay, with a listen address that cannot be bound made a one-line StartError."""
    entered = False
    try:
        async with open_overlay(seed, listen=listen, topics=[JOBS_TOPIC], dht_server=True) as overlay:
            entered = True
            yield overlay
    except OSError as exc:
        if entered:
            raise
        raise listen_failed("--listen", listen, exc) from None


async def _run_bootstrap(config: BootstrapConfig, task_status) -> None:
    seed = config.seed if config.seed is not None else load_or_create_key(config.data_dir / "bootstrap.key")
    stats = Stats(config.pow_difficulty)
    async with _listening_overlay(seed, config.listen) as overlay:

        async def read_gossip():
            async for message in overlay.messages():
                stats.observe(message.data, message.from_peer)

        async def watch_peers():
            while True:
                for pid in overlay.connected_peers():
                    if pid != overlay.peer_id:
                        stats.seen(pid)
                await trio.sleep(PEER_WATCH_INTERVAL_S)

        metrics = BootstrapMetrics(stats, lambda: len(set(overlay.connected_peers()) - {overlay.peer_id}))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_gossip)
            nursery.start_soon(watch_peers)
            try:
                host, port = await nursery.start(serve_app, config.http_host, config.http_port,
                                                 bootstrap_app(overlay, stats, metrics))
            except OSError as exc:
                raise listen_failed("--http", f"{config.http_host}:{config.http_port}", exc) from None
            addr = overlay.multiaddrs()[0]
            (config.data_dir / "multiaddr").write_text(addr + "\n")
            task_status.started({"multiaddr": addr, "http": f"http://{host}:{port}"})
