"""Getting results out: output files fetched by CID from agreeing executors and checked against
the certificate; cancelling a job; the peer list."""

from __future__ import annotations

import json

import pytest

from distributeai.consensus.cid import cid_text
from distributeai.consensus.unixfs import FileBuilder
from distributeai.tools.devnet import Devnet

from .netfixtures import cli, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Devnet(tmp_path_factory.mktemp("results") / "net", nodes=3, sandbox="process") as n:
        n.start()
        n.wait_connected()
        yield n


def submit(net: Devnet, *args: str) -> dict:
    out = cli("submit", "--data-dir", str(net.node_dirs[0]), "--json", *args)
    assert out.stdout, out.stderr
    return json.loads(out.stdout)


def test_output_files_are_fetched_from_agreeing_executors_and_checked(net, tmp_path):
    script = 'mkdir -p "$OUT_DIR/sub" && echo forty-two > "$OUT_DIR/answer.txt" && head -c 300000 /dev/zero > "$OUT_DIR/sub/zeros"'
    view = submit(net, "--image", "alpine:latest", "--cmd", "sh", "-c", script)
    assert view["status"] == "verified", view
    assert [f["path"] for f in view["files"]] == ["answer.txt", "sub/zeros"]
    # The submitter (node 1) did not necessarily run it; ask a node that saw only the certificate too,
    # once the certificate has reached it by gossip (the submitter's verdict does not wait for that).
    wait_for(lambda: net.call(2, {"op": "status", "job_id": view["job_id"]}).get("status") == "verified", 60,
             "node 3 to apply the certificate")
    for i in (0, 2):
        out = tmp_path / f"out{i}"
        answer = net.call(i, {"op": "result", "job_id": view["job_id"], "out": str(out)})
        assert "error" not in answer, answer
        assert (out / "answer.txt").read_text() == "forty-two\n"
        builder = FileBuilder()
        builder.add((out / "sub" / "zeros").read_bytes())
        assert cid_text(builder.finish()[0]) == view["files"][1]["cid"]


def test_cancel_ends_a_running_job(net):
    job = submit(net, "--no-wait", "--image", "alpine:latest", "--timeout", "30", "--cmd", "sleep", "20")
    view = net.call(0, {"op": "cancel", "job_id": job["job_id"]})
    assert view["status"] == "failed" and view["reason"] == "cancelled"
    again = net.call(0, {"op": "cancel", "job_id": job["job_id"]})
    assert again["code"] == "finished"


def test_peers_lists_the_other_nodes(net):
    peers = net.call(0, {"op": "peers"})["peers"]
    others = {n["peer_id"] for n in net.node_info[1:]}
    assert others <= {p["peer_id"] for p in peers if p["connected"]}
    assert all(p["reputation"] is not None for p in peers if p["peer_id"] in others)
