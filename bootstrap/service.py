"""The bootstrap: a well-known DHT seed that also watches the jobs topic and serves statistics.

It takes no part in awarding or verifying jobs. It verifies what it counts (announcements and
certificates are checked with `consensus` like on any node), so its figures cannot be inflated by
unsigned junk; a bad message is dropped and counted in `rejected`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import trio

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.codec import decode_canonical
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import MAX_ENVELOPE
from distributeai.consensus.names import JOBS_TOPIC
from distributeai.consensus.validate import check_announce
from distributeai.p2p.identity import load_or_create_key, peer_id_from_public_key
from distributeai.p2p.overlay import Overlay, open_overlay

from distributeai.p2p.http import serve_http

log = logging.getLogger("distributeai.bootstrap")
RECENT_JOBS = 100


@dataclass(frozen=True)
class BootstrapConfig:
    data_dir: Path
    listen: str = "/ip4/127.0.0.1/tcp/4001"
    http_host: str = "127.0.0.1"
    http_port: int = 8080


class Stats:
    def __init__(self) -> None:
        self.announced = 0
        self.certified: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.jobs: dict[str, dict] = {}
        self.order: deque[str] = deque()
        self.started = time.time()

    def _job(self, job_id: str) -> dict:
        if job_id not in self.jobs:
            self.jobs[job_id] = {"job_id": job_id, "status": "announced"}
            self.order.append(job_id)
            while len(self.order) > RECENT_JOBS:
                self.jobs.pop(self.order.popleft(), None)
        return self.jobs[job_id]

    def observe(self, data: bytes, from_peer: str) -> None:
        try:
            value = decode_canonical(data, MAX_ENVELOPE)
            kind = value[0] if isinstance(value, list) and value and isinstance(value[0], str) else None
            if kind == "announce":
                ann = check_announce(data, int(time.time() * 1000))
                if peer_id_from_public_key(ann.spec.submitter) != from_peer:
                    raise RemoteProtocolError("wrong_sender", "announce under another author")
                job = self._job(ann.job_id.hex())
                if "announced_at" in job:
                    raise RemoteProtocolError("replay", "job already announced")
                self.announced += 1
                job.update(name=ann.spec.name, image=ann.spec.image, submitter=from_peer,
                           replicas=ann.spec.replicas, quorum=ann.spec.quorum, announced_at=time.time())
            elif kind == "certificate":
                checked = verify_certificate(data)
                job = self._job(checked.certificate.job_id.hex())
                if job.get("status") in ("verified", "failed"):
                    raise RemoteProtocolError("replay", "certificate already counted")
                self.certified[checked.certificate.status] += 1
                job.update(status=checked.certificate.status, name=checked.spec.name,
                           executors=len(checked.awards), agreeing=len(checked.tally.agreeing),
                           dissenting=len(checked.tally.dissenting), certified_at=time.time())
            else:
                raise RemoteProtocolError("unknown_kind", repr(kind))
        except RemoteProtocolError as exc:
            self.rejected[exc.reason] += 1
            log.info("rejected gossip from %s: %s", from_peer, exc)


def snapshot(overlay: Overlay, stats: Stats) -> dict:
    recent = [stats.jobs[j] for j in reversed(stats.order)]
    return {
        "peer_id": overlay.peer_id,
        "multiaddrs": overlay.multiaddrs(),
        "nodes": sorted(overlay.connected_peers()),
        "nodes_online": len(overlay.connected_peers()),
        "jobs_announced": stats.announced,
        "jobs_certified": sum(stats.certified.values()),
        "jobs_verified": stats.certified["verified"],
        "jobs_failed": stats.certified["failed"],
        "rejected": dict(stats.rejected),
        "recent_jobs": recent,
        "uptime_s": round(time.time() - stats.started, 1),
    }


async def run_bootstrap(config: BootstrapConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    seed = load_or_create_key(config.data_dir / "bootstrap.key")
    stats = Stats()
    async with open_overlay(seed, listen=config.listen, topics=[JOBS_TOPIC], dht_server=True) as overlay:

        async def api_stats():
            return 200, "application/json", json.dumps(snapshot(overlay, stats), indent=1).encode()

        async def index():
            s = snapshot(overlay, stats)
            rows = "".join(f"<tr><td>{j['job_id'][:16]}</td><td>{j.get('name','')}</td><td>{j['status']}</td>"
                           f"<td>{j.get('agreeing','')}/{j.get('executors','')}</td></tr>" for j in s["recent_jobs"])
            body = (f"<!doctype html><title>DistributeAI bootstrap</title><h1>DistributeAI</h1>"
                    f"<p>{s['nodes_online']} nodes online; {s['jobs_announced']} jobs announced, "
                    f"{s['jobs_verified']} verified, {s['jobs_failed']} failed.</p>"
                    f"<table><tr><th>job</th><th>name</th><th>status</th><th>agreeing/executors</th></tr>{rows}</table>")
            return 200, "text/html; charset=utf-8", body.encode()

        async def read_gossip():
            async for message in overlay.messages():
                stats.observe(message.data, message.from_peer)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_gossip)
            host, port = await nursery.start(serve_http, config.http_host, config.http_port,
                                             {"/api/stats": api_stats, "/": index})
            addr = overlay.multiaddrs()[0]
            (config.data_dir / "multiaddr").write_text(addr + "\n")
            task_status.started({"multiaddr": addr, "http": f"http://{host}:{port}"})
