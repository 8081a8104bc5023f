"""A hostile job author against a real network (a bootstrap and 3 node processes), in Docker and
in bubblewrap: output names that are not UTF-8 or carry terminal escapes, FIFOs and symlinks in
/out, writing past the output quota (bytes, sparse files, entries), more files than a reveal lists,
and outputs lost on every executor. Each job ends with one verdict that every honest executor
agrees on, nobody honest loses reputation, and what was dropped is said in the human output."""

from __future__ import annotations

import json

import pytest

from distributeai.consensus.cid import cid_text, parse_cid_text
from distributeai.tools.devnet import Devnet

from .netfixtures import cli, sandbox_devnet, submit_json

pytestmark = pytest.mark.slow

NAMES_SCRIPT = ("cd /out && echo ok > good.txt && echo x > \"$(printf 'bad\\377name')\" "
                "&& echo y > \"$(printf 'esc\\033[31mred')\" && mkfifo pipe && ln -s /etc/passwd link && echo done")


@pytest.fixture(scope="module", params=["docker", "bwrap"])
def net(request, tmp_path_factory):
    with sandbox_devnet(request, tmp_path_factory, "hostile") as n:
        yield n


def run(net: Devnet, script: str, *options: str) -> dict:
    view, _ = submit_json(net.node_dirs[0], *options, "--image", "alpine:latest", "--cmd", "sh", "-c", script)
    assert view["status"] == "verified", view
    agreed = [e for e in view["executors"] if e["agreed"]]
    assert len(agreed) >= 2
    # Every executor that revealed agrees: no honest executor is out-voted by a name or a quota.
    assert all(e["agreed"] for e in view["executors"] if e["result_hash"]), view["executors"]
    return view


def human_status(net: Devnet, job_id: str) -> str:
    out = cli("job", "status", job_id, "--data-dir", str(net.node_dirs[0]))
    assert out.returncode == 0, out.stderr
    return out.stdout


def no_one_lost_reputation(net: Devnet) -> None:
    reputation = net.call(0, {"op": "reputation"})["reputation"]
    assert all(value >= 0 for value in reputation.values()), reputation


def test_hostile_names_fifos_and_symlinks_are_skipped_alike_everywhere_and_said(net, tmp_path):
    view = run(net, NAMES_SCRIPT)
    assert view["stdout"] == "done\n" and view["exit_code"] == 0
    assert [f["path"] for f in view["files"]] == ["good.txt"]
    outputs = view["outputs"]
    assert outputs["files"] == 1 and outputs["skipped"] == 4
    assert sorted(e["reason"] for e in outputs["skipped_entries"]) == ["bad_output_name", "bad_output_name",
                                                                      "fifo", "symlink"]
    assert {"bad\\xffname", "esc\\x1b[31mred"} <= {e["name"] for e in outputs["skipped_entries"]}
    text = human_status(net, view["job_id"])
    assert "\x1b" not in text and "esc\\x1b[31mred" in text and "bad_output_name" in text
    no_one_lost_reputation(net)
    # The outputs vanish from every node (a disk lost): `job result --out` says which file it
    # could not fetch, and fails.
    cid = parse_cid_text(view["files"][0]["cid"])
    for d in net.node_dirs:
        (d / "blocks" / cid[4:5].hex() / cid_text(cid)).unlink(missing_ok=True)
    got = cli("job", "result", view["job_id"], "--data-dir", str(net.node_dirs[0]), "--out", str(tmp_path / "o"))
    assert got.returncode == 1, got.stderr
    assert "could not fetch good.txt" in got.stderr
    assert "\x1b" not in got.stderr


@pytest.mark.parametrize("script,options,why", [
    ("dd if=/dev/zero of=/out/big bs=1M count=5; echo wrote", ("--out-max", "1m"), "bytes, written"),
    ("truncate -s 2G /out/a && truncate -s 2G /out/b && echo sparse", (), "bytes, sparse"),
    ("i=0; while [ $i -lt 300 ]; do : > /out/f$i; i=$((i+1)); done; echo made", ("--out-max-files", "50"), "entries"),
])
def test_past_the_output_quota_the_result_is_out_quota_exceeded_everywhere(net, script, options, why):
    view = run(net, script, *options)
    assert view["outputs"]["status"] == "out_quota_exceeded", why
    assert (view["exit_code"], view["stdout"], view["files"]) == (-1, "", []), why
    assert "more than its quota" in human_status(net, view["job_id"])
    no_one_lost_reputation(net)


def test_a_manifest_cut_at_its_limit_says_so(net):
    view = run(net, "i=100; while [ $i -lt 200 ]; do echo $i > /out/f$i; i=$((i+1)); done")
    outputs = view["outputs"]
    assert (outputs["files"], outputs["listed"], outputs["manifest_truncated"]) == (100, 64, True)
    assert "the certified result lists the first 64" in human_status(net, view["job_id"])
    got = cli("job", "result", view["job_id"], "--data-dir", str(net.node_dirs[0]), "--json")
    assert json.loads(got.stdout)["outputs"]["manifest_truncated"] is True


# --- inputs (issue 16, item 3), on the same network ----------------------------------------------

IN_SCRIPT = ("cd /in && find . | sort && cat data.txt && sha256sum ds/a ds/sub/b "
             "&& if touch /in/x 2>/dev/null; then echo writable; else echo read-only; fi")


def stored(net: Devnet, i: int, job_id: str) -> tuple:
    """The signed spec and certificate node i stored for a job (its SQLite, read-only)."""
    import sqlite3

    db = sqlite3.connect(f"file:{net.node_dirs[i] / 'node.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT signed_spec, certificate FROM jobs WHERE job_id=?", (job_id,)).fetchone()
    finally:
        db.close()


def test_inputs_are_fetched_shown_read_only_at_in_and_their_holders_say_so_when_bidding(net, tmp_path):
    import hashlib
    import os

    from distributeai.consensus.cid import cid_text
    from distributeai.consensus.messages import Bid, Certificate, JobSpec, Reveal, verify

    (tmp_path / "data.txt").write_bytes(b"hello inputs\n")
    ds = tmp_path / "dataset"
    (ds / "sub").mkdir(parents=True)
    (ds / "a").write_bytes(b"A\n")
    blob = os.urandom(300_000)  # two blocks: a file DAG, not one raw leaf
    (ds / "sub" / "b").write_bytes(blob)
    view = run(net, IN_SCRIPT, "--input", str(tmp_path / "data.txt"), "--input", f"{ds}:ds")
    lines = view["stdout"].splitlines()
    assert lines[:6] == [".", "./data.txt", "./ds", "./ds/a", "./ds/sub", "./ds/sub/b"], lines
    assert "hello inputs" in lines and lines[-1] == "read-only"
    assert f"{hashlib.sha256(blob).hexdigest()}  ds/sub/b" in lines
    spec = verify(stored(net, 0, view["job_id"])[0], JobSpec).msg
    assert [(path, size) for _, path, size in spec.inputs] == [("data.txt", 13), ("ds", 300_002)]
    # A second job names the dataset by CID (a job file): the submitting node sizes it, and the
    # nodes that hold it (its submitter, every executor that ran the first job) say so in their bids.
    cid = spec.inputs[1][0]
    job = tmp_path / "again.json"
    job.write_text(json.dumps({"image": "alpine:latest", "command": ["sha256sum", "/in/again/sub/b"],
                               "inputs": [{"cid": cid_text(cid), "path": "again"}]}))
    view2, _ = submit_json(net.node_dirs[0], "-f", str(job))
    assert view2["status"] == "verified", view2
    assert view2["stdout"] == f"{hashlib.sha256(blob).hexdigest()}  /in/again/sub/b\n"
    spec2_raw, cert_raw = stored(net, 0, view2["job_id"])
    assert verify(spec2_raw, JobSpec).msg.inputs == ((cid, "again", 300_002),)
    first = verify(stored(net, 0, view["job_id"])[1], Certificate).msg
    holders = {spec.submitter} | {verify(r, Reveal).msg.executor for r in first.reveals}
    bids = [verify(b, Bid).msg for b in verify(cert_raw, Certificate).msg.bids]
    assert any(b.bidder in holders for b in bids), bids
    assert all(b.held == 300_002 for b in bids if b.bidder in holders), bids
