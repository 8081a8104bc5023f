"""Reasons travel (issue 15): on a real network (a bootstrap and 3 node processes, Docker), a job
no node can run fails as soon as every node has declined, with the declines counted by kind, in
`submit`, `job status`, `--json` and the REST API; a quorum larger than the nodes a submitter
reaches is refused before anything is announced; the bootstrap is not counted as a node."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from distributeai.consensus.submitter import Timing
from distributeai.tools.devnet import Devnet

from .netfixtures import cli, wait_for

pytestmark = pytest.mark.slow

MISSING = "nosuch/image:1"


@pytest.fixture(scope="module")
def net(tmp_path_factory, docker_host):
    with Devnet(tmp_path_factory.mktemp("reasons") / "net", nodes=3, sandbox="docker", docker_host=docker_host,
                api=True) as n:
        n.start()
        n.wait_connected()
        yield n


def test_a_job_nobody_can_run_fails_at_once_with_the_reasons_counted(net):
    out = cli("submit", "--data-dir", str(net.node_dirs[0]), "--image", MISSING, "--cmd", "true")
    assert out.returncode == 1, out.stderr
    job_id = out.stdout.split()[1]
    view = json.loads(cli("job", "status", job_id, "--data-dir", str(net.node_dirs[0]), "--json").stdout)
    # With a quorum of 2 among 3 nodes the outcome is certain once two have declined; the third
    # may not have answered by then, and the reason says so.
    declined = len(view["declines"])
    reason = f"no bids: {declined} nodes lack image {MISSING}" + ("" if declined == 3 else ", 1 node had not answered")
    assert declined >= 2 and view["status"] == "failed" and view["reason"] == reason, view
    assert f"failed ({reason})" in out.stdout, out.stdout
    assert {d["code"] for d in view["declines"]} == {"image_missing"}
    assert all(MISSING in d["detail"] for d in view["declines"])
    # Decided by the declines, not by the wait for bidders that never come (bid_wait_ms), which
    # cannot end the job before it has passed.
    assert view["elapsed_s"] < Timing().bid_wait_ms / 1000, view["history"]
    # The certificate carries the reason and the signed declines to every node.
    def observed():
        other = json.loads(cli("job", "status", job_id, "--data-dir", str(net.node_dirs[1]), "--json").stdout)
        return other if other.get("status") == "failed" else None
    other = wait_for(observed, 30, "the failed certificate at another node")
    assert other["reason"] == reason and len(other["declines"]) == declined
    human = cli("job", "status", job_id, "--data-dir", str(net.node_dirs[1]))
    assert reason in human.stdout
    declined = [line for line in human.stdout.splitlines() if line.startswith("declined ")]
    assert len(declined) == len(other["declines"]) and all(MISSING in line for line in declined), human.stdout


def test_the_rest_api_says_why_too(net):
    api = net.node_info[0]["api_url"]
    body = json.dumps({"name": "missing", "docker_image": MISSING, "command": ["true"]}).encode()
    req = urllib.request.Request(f"{api}/api/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        job_id = json.load(r)["id"]
    out = cli("job", "status", job_id, "--data-dir", str(net.node_dirs[0]), "--json")
    assert json.loads(out.stdout)["status"] in ("bidding", "running", "failed")
    cli("submit", "--data-dir", str(net.node_dirs[0]), "--image", "alpine:latest", "--cmd", "true", "--json")

    def failed():
        with urllib.request.urlopen(f"{api}/api/v1/jobs/{job_id}", timeout=30) as r:
            job = json.load(r)
        return job if job["status"] == "failed" else None
    job = wait_for(failed, 30, "the REST job to fail")
    assert job["reason"].startswith("no bids: ") and f"lack image {MISSING}" in job["reason"]
    with urllib.request.urlopen(f"{api}/stats", timeout=30) as r:
        assert json.load(r)["active_nodes"] == 3  # this node and its two peers; not the bootstrap
    # A verified result says what the job did, its stderr too.
    body = json.dumps({"name": "err", "docker_image": "alpine:latest",
                       "command": ["sh", "-c", "echo out; echo oops >&2; exit 3"]}).encode()
    req = urllib.request.Request(f"{api}/api/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        verified_id = json.load(r)["id"]

    def verified():
        try:
            with urllib.request.urlopen(f"{api}/api/v1/jobs/{verified_id}/result", timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as exc:
            assert exc.code == 409  # not verified yet
            return None
    result = wait_for(verified, 60, "the REST job's verified result")
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (3, "out\n", "oops\n")
    assert result["timed_out"] is False and result["stdout_truncated"] is False


def test_a_quorum_larger_than_the_reachable_nodes_is_refused_before_announcing(net):
    before = json.loads(cli("job", "list", "--data-dir", str(net.node_dirs[1]), "--json").stdout)
    out = cli("submit", "--data-dir", str(net.node_dirs[0]), "--replicas", "4", "--quorum", "4",
              "--image", "alpine:latest", "--cmd", "true")
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "the quorum needs 4 executors but only 3 nodes can be reached" in out.stderr
    after = json.loads(cli("job", "list", "--data-dir", str(net.node_dirs[0]), "--json").stdout)
    assert all(j.get("replicas", 0) != 4 for j in after.get("jobs", [])), after
    # Nothing was announced: the other nodes' lists did not grow either.
    assert json.loads(cli("job", "list", "--data-dir", str(net.node_dirs[1]), "--json").stdout) == before
