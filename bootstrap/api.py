"""The bootstrap's HTTP API and page, as one `p2p.http` app (GET only):

- `/`: the live page (`page.py`);
- `/api/stats`: the figures (JSON), each recent job as a short summary, the most common recent
  failure reasons and the last hour minute by minute, a few tens of kilobytes at most;
- `/api/jobs/ID`: one recent job's detail (spec, executors, bids, declines, timeline), by its id
  or a unique prefix of at least 8 hex digits; 404 for a job the bootstrap does not hold;
- `/metrics`: Prometheus (`metrics.py`).
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

from distributeai.bootstrap.page import page_response
from distributeai.p2p.http import App, Request, Response, json_response

if TYPE_CHECKING:
    from distributeai.p2p.overlay import Overlay

    from .metrics import BootstrapMetrics
    from .service import Stats

JOB_PATH = re.compile(r"/api/jobs/([0-9a-fA-F]{8,64})")


def snapshot(overlay: "Overlay", stats: "Stats") -> dict:
    connected = set(overlay.connected_peers()) - {overlay.peer_id}
    now = time.time()
    for pid in connected:
        stats.seen(pid, now)
    recent = [stats.jobs[j] for j in reversed(stats.order)]
    return {
        "peer_id": overlay.peer_id,
        "multiaddrs": overlay.multiaddrs(),
        "nodes": sorted(connected),
        "nodes_online": len(connected),
        "nodes_known": len((set(stats.last_seen) | set(stats.jobs_run) | connected) - {overlay.peer_id}),
        "nodes_detail": stats.nodes_detail(connected, overlay.peer_id),
        "jobs_announced": stats.announced,
        "jobs_certified": sum(stats.certified.values()),
        "jobs_verified": stats.certified["verified"],
        "jobs_failed": stats.certified["failed"],
        "jobs_nondeterministic": stats.certified["nondeterministic"],
        "jobs_per_minute": stats.per_minute(),
        "failure_reasons": stats.failure_reasons(),
        "last_hour": stats.series.snapshot(now),
        "rejected": dict(stats.rejected),
        # The certificate view every node computes from the same certificates (consensus/ledger.py).
        "ledger": {"certificates": len(stats.ledger.applied), "view_digest": stats.ledger.view_digest().hex()},
        "recent_jobs": recent,
        "uptime_s": round(now - stats.started, 1),
        "now": round(now, 3),
    }


def bootstrap_app(overlay: "Overlay", stats: "Stats", metrics: "BootstrapMetrics") -> App:
    async def app(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if request.path == "/":
            return page_response()
        if request.path == "/api/stats":
            return 200, "application/json", json.dumps(snapshot(overlay, stats), indent=1).encode()
        if request.path == "/metrics":
            return await metrics.http_route()
        if m := JOB_PATH.fullmatch(request.path):
            job = stats.job_detail(m.group(1))
            if job is None:
                return json_response(404, {"error": "no such recent job (the bootstrap keeps the last "
                                                    "100, and a prefix must name one job)"})
            return json_response(200, {**job, "now": round(time.time(), 3)})
        if request.path.startswith("/api/jobs/"):
            return json_response(400, {"error": "a job id is 8 to 64 hex digits"})
        return 404, "text/plain", b"not found\n"

    return app
