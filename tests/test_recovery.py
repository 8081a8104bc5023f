"""Nothing is lost: a node killed with SIGKILL comes back where it was."""

from __future__ import annotations

import json

import pytest

from distributeai.tools.devnet import Devnet

from .netfixtures import DEMO_STDOUT, cli, wait_for


@pytest.mark.slow
def test_submitter_killed_mid_job_finishes_the_job_after_restart(tmp_path):
    with Devnet(tmp_path / "net", nodes=3, sandbox="process") as net:
        net.start()
        net.wait_connected()
        # A job that runs long enough for the kill to land while it is in flight.
        out = cli("submit", "--data-dir", str(net.node_dirs[0]), "--no-wait", "--json", "--image", "alpine:latest",
                  "--cmd", "sh", "-c", "sleep 2; echo 'Hello' | sha256sum")
        assert out.returncode == 0, out.stderr
        job_id = json.loads(out.stdout)["job_id"]

        def status(i: int) -> dict:
            r = cli("job", "status", job_id, "--data-dir", str(net.node_dirs[i]), "--json")
            return json.loads(r.stdout) if r.returncode == 0 else {}

        # 2 or 3 awards: a bid that misses the window is not waited for when nobody outranks the
        # bids in hand (all reputations are 0 here), and 2 agreeing results end the job.
        wait_for(lambda: len(status(0).get("executors", [])) >= 2, 60, "the job to be awarded")
        net.kill_node(0)
        net.restart_node(0)
        final = wait_for(lambda: (s := status(0)).get("status") in ("verified", "failed") and s, 180,
                         "the restarted submitter to finish the job")
        print(f"\nsubmitter killed and restarted: {final['status']} after {final['elapsed_s']:.2f} s")
        assert final["status"] == "verified", final
        assert final["stdout"] == DEMO_STDOUT
        # job status shows the whole story, rebuilt from the store: awards, commits, reveals, verdict
        events = [h["event"] for h in final["history"]]
        assert 2 <= events.count("award") <= 3 and "verified" in events and "reveal" in events, events
        assert 2 <= len(final["executors"]) <= 3 and sum(e["agreed"] for e in final["executors"]) >= 2


@pytest.mark.slow
def test_restarted_node_keeps_its_identity_and_its_jobs(tmp_path):
    with Devnet(tmp_path / "net", nodes=3, sandbox="process") as net:
        net.start()
        net.wait_connected()
        out = cli("submit", "--data-dir", str(net.node_dirs[1]), "--json", "--image", "alpine:latest",
                  "--cmd", "sh", "-c", "echo 'Hello' | sha256sum")
        assert out.returncode == 0, out.stderr
        job = json.loads(out.stdout)
        before = net.node_info[1]["peer_id"]
        net.kill_node(1)
        # With the node down, `node info` still tells its identity and last addresses.
        down = cli("node", "info", "--data-dir", str(net.node_dirs[1]), "--json")
        assert down.returncode == 0, down.stderr
        assert json.loads(down.stdout) == {"peer_id": before, "multiaddrs": net.node_info[1]["multiaddrs"],
                                           "running": False}
        assert net.restart_node(1)["peer_id"] == before
        r = cli("job", "status", job["job_id"], "--data-dir", str(net.node_dirs[1]), "--json")
        assert r.returncode == 0, r.stderr
        again = json.loads(r.stdout)
        assert again["status"] == "verified" and again["result_hash"] == job["result_hash"]
        net.wait_connected()
