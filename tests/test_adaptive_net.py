"""Adaptive replication on a real network (issue 18, item 2): five node processes, a warm-up that
makes every executor trusted (the threshold lowered through the signed spec, as any submitter
may), adaptive jobs that run on fewer executors and all verify, and a cheater planted after the
warm-up, caught by a spot check. The figures (50 jobs) come from `python -m
distributeai.tools.adaptive_net`; this test asserts what the protocol guarantees."""

from __future__ import annotations

from distributeai.tools.adaptive_net import AdaptiveNet, adaptive_jobs, plant_cheater, warm_up
from distributeai.tools.devnet import Devnet

THRESHOLD = 2


def test_trusted_executors_run_alone_and_a_planted_cheater_is_caught(tmp_path):
    with Devnet(tmp_path / "net", nodes=5, sandbox="process", log_level="warning") as net:
        net.start()
        net.wait_connected(timeout=120)
        an = AdaptiveNet(net)
        warm = warm_up(an, THRESHOLD)
        assert [v["status"] for v in warm] == ["verified"] * THRESHOLD
        assert all(v["verification"] == "replicated" and v["executors_run"] == 5 for v in warm)
        # Every node holds the warm-up's certificates: each executor's count is THRESHOLD.
        for who in range(5):
            assert list(an.trust(0, who).values()) == [THRESHOLD]

        views = adaptive_jobs(an, 6, THRESHOLD, concurrency=2)
        assert [v["status"] for v in views] == ["verified"] * 6
        # Every best-ranked bidder is trusted now: a job runs once, or twice when the draw called a
        # spot check (k-of-n only if its trusted executor failed), so far fewer runs than 3 each.
        for v in views:
            assert v["executors_run"] == {"single": 1, "spot_checked": 2}.get(v["verification"], v["executors_run"])
            assert v["verification"] != "replicated" or "escalated" in [h["event"] for h in v["history"]]
        assert sum(v["executors_run"] for v in views) <= 2 * len(views) + 2

        an.settle(THRESHOLD + len(views))
        caught = plant_cheater(an, THRESHOLD, THRESHOLD + len(views))
        view = caught["view"]
        # Checked at every single run (floor 1.0): the honest checker disagreed, the job escalated
        # to k-of-n, and the verdict is the honest result with the cheater dissenting.
        assert view["status"] == "verified" and view["verification"] == "replicated"
        events = [h["event"] for h in view["history"]]
        assert "spot_check" in events and "escalated" in events
        dissenters = [e["peer_id"] for e in view["executors"] if e.get("dissented")]
        assert dissenters == [caught["peer_id"]]
        assert max(caught["trust_before"].values()) >= THRESHOLD
        assert list(caught["trust_after"].values()) == [0]
