"""Ledgers converge on real node processes: a node that was down while jobs were verified learns
their certificates by reconciliation (node/reconcile.py) when it comes back, with no new gossip,
and ends with the same ledger view (view_digest) as the nodes that saw them live."""

from __future__ import annotations

import json
import urllib.request

import pytest

from distributeai.tools.devnet import Devnet

from .netfixtures import cli, wait_for

JOBS = 2


def _bootstrap_ledger(url: str) -> dict:
    with urllib.request.urlopen(url + "/api/stats", timeout=10) as r:
        return json.load(r)["ledger"]


@pytest.mark.slow
def test_a_node_that_was_down_converges_to_the_same_ledger_view(tmp_path, monkeypatch):
    # Sessions on connect and every second with a random peer (the default is a minute).
    monkeypatch.setenv("DISTRIBUTEAI_RECONCILE_INTERVAL", "1")
    with Devnet(tmp_path / "net", nodes=4, sandbox="process") as net:
        net.start()
        net.wait_connected()
        before = net.info(3)["ledger"]
        net.kill_node(3)
        job_ids = []
        for i in range(JOBS):
            out = cli("submit", "--data-dir", str(net.node_dirs[i % 3]), "--json", "--image", "alpine:latest",
                      "--cmd", "sh", "-c", f"echo {i}")
            assert out.returncode == 0, out.stderr
            job = json.loads(out.stdout)
            assert job["status"] == "verified", job
            job_ids.append(job["job_id"])

        def views(nodes) -> dict[int, dict]:
            return {i: net.info(i)["ledger"] for i in nodes}

        def live_agree():
            v = views(range(3))
            digests = {x["view_digest"] for x in v.values()}
            return v[0] if len(digests) == 1 and v[0]["certificates"] >= before["certificates"] + JOBS else None

        live = wait_for(live_agree, 120, "the three live nodes to hold every certificate and agree")
        assert live["view_digest"] != before["view_digest"]
        # The bootstrap folds what it saw on gossip the same way (bootstrap/api.py /api/stats).
        wait_for(lambda: _bootstrap_ledger(net.http_url) == live, 60, "the bootstrap's view to match")

        net.restart_node(3)
        # No job runs from here on: nothing new is gossiped. (GossipSub may still offer messages
        # from its short cache to the returning node, so the test does not insist on how many
        # certificates reconciliation pulled; tests/test_reconcile_peers.py does.)
        wait_for(lambda: net.info(3)["ledger"] == net.info(0)["ledger"] == live, 120,
                 "the restarted node to reach the others' ledger view")
        # A session starts with each peer that connects, whatever the node already holds.
        counters = wait_for(lambda: (c := net.info(3)["counters"]).get("reconcile_sessions", 0) >= 1 and c, 60,
                            "the restarted node to reconcile with a peer")
        print(f"\nrestarted node: {counters.get('reconcile_sessions', 0)} sessions, "
              f"{counters.get('reconcile_pulled', 0)} certificates pulled, {counters.get('gossip_in', 0)} gossip in")
        assert counters.get("reconcile_bad", 0) == 0 and "reconcile_bad" not in net.info(0)["counters"]
        for job_id in job_ids:
            r = cli("job", "status", job_id, "--data-dir", str(net.node_dirs[3]), "--json")
            assert r.returncode == 0 and json.loads(r.stdout)["status"] == "verified", r.stdout + r.stderr
