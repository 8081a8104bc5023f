"""`distributeai blob add|get|ls` on a real network: a bootstrap and 3 node processes on 127.0.0.1.

A file and a directory added on one node are fetched by CID on the others over Bitswap, from one
provider and from two at once; the CIDs are what `ipfs add --cid-version 1` gives (computed here
with consensus.unixfs, which tests/test_unixfs.py checks against the reference importer); a CID
nobody holds and a malformed one are refused with one line. `submit --input` and `job result --out`
are listed in the node's transfers while they run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distributeai.consensus.cid import cid_text
from distributeai.consensus.unixfs import FileBuilder
from distributeai.tools.devnet import Devnet

from .netfixtures import cli, wait_for


def pattern(size: int, seed: int) -> bytes:
    """Seeded bytes that differ from chunk to chunk (no two leaves alike)."""
    out = bytearray()
    block = seed.to_bytes(4, "big")
    import hashlib
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def file_cid(data: bytes) -> str:
    builder = FileBuilder()
    builder.add(data)
    root, _, _ = builder.finish()
    return cid_text(root)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Devnet(tmp_path_factory.mktemp("blobs") / "net", nodes=3, sandbox="process") as net:
        net.start()
        net.wait_connected()
        yield net


def blob(net: Devnet, i: int, *args: str) -> dict:
    out = cli("blob", *args, "--data-dir", str(net.node_dirs[i]), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_file_and_a_tree_travel_by_cid(net, tmp_path):
    data = pattern(3 * (1 << 20) + 12345, 1)  # 13 leaves and a root
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha\n")
    (tree / "sub" / "b.bin").write_bytes(pattern(300_000, 2))

    added = blob(net, 0, "add", str(src))
    assert added["cid"] == file_cid(data) and added["size"] == len(data)
    tree_cid = blob(net, 0, "add", str(tree))["cid"]

    # From the connected peers (only node 0 holds it: the others answer DONT_HAVE).
    got = blob(net, 1, "get", added["cid"], "--out", str(tmp_path / "one.bin"))
    assert (tmp_path / "one.bin").read_bytes() == data
    assert got["fetched_blocks"] == 14 and got["size"] == len(data)
    # From two providers at once, named.
    peers = [net.node_info[i]["peer_id"] for i in (0, 1)]
    two = blob(net, 2, "get", added["cid"], "--out", str(tmp_path / "two.bin"), "--from", peers[0], "--from", peers[1])
    assert (tmp_path / "two.bin").read_bytes() == data and two["providers"] == 2
    # Asked again: every block is held, nothing moves.
    again = blob(net, 2, "get", added["cid"], "--out", str(tmp_path / "three.bin"))
    assert again["fetched_blocks"] == 0 and (tmp_path / "three.bin").read_bytes() == data

    blob(net, 1, "get", tree_cid, "--out", str(tmp_path / "tree-copy"))
    assert (tmp_path / "tree-copy" / "a.txt").read_bytes() == b"alpha\n"
    assert (tmp_path / "tree-copy" / "sub" / "b.bin").read_bytes() == pattern(300_000, 2)

    listed = {row["cid"] for row in blob(net, 1, "ls")["blobs"]}
    assert {added["cid"], tree_cid} <= listed


def test_refusals(net, tmp_path):
    bad = cli("blob", "get", "not-a-cid", "--out", str(tmp_path / "x"), "--data-dir", str(net.node_dirs[1]))
    assert bad.returncode == 2 and "not a CID" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    nobody = file_cid(pattern(1000, 99))  # held by no node
    peer = net.node_info[0]["peer_id"]
    out = cli("blob", "get", nobody, "--out", str(tmp_path / "y"), "--from", peer, "--data-dir", str(net.node_dirs[1]))
    assert out.returncode == 1 and "unavailable" in out.stderr, out.stderr
    assert not (tmp_path / "y").exists()
    gone = cli("blob", "add", str(tmp_path / "missing"), "--data-dir", str(net.node_dirs[0]))
    assert gone.returncode == 2 and "does not exist" in gone.stderr
    assert os.path.isdir(net.node_dirs[0] / "blocks")


def watch_transfers(net: Devnet, i: int, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run a CLI command against node `i` and sample the node's `transfers` op until it ends:
    (its outcome, every row seen). A fast machine may finish before the first sample, so callers
    check a row's fields when one was seen, never that one was."""
    proc = subprocess.Popen([sys.executable, "-m", "distributeai.cli.main", *args, "--data-dir",
                             str(net.node_dirs[i]), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    seen: list[dict] = []
    try:
        while proc.poll() is None:
            seen += net.call(i, {"op": "transfers"}, timeout=30)["transfers"]
            time.sleep(0.02)  # sampling the transfer, not synchronization: the loop ends with the process
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), seen


def test_submit_input_and_job_result_out_are_listed_as_transfers(net, tmp_path):
    """`submit --input` of a 64 MiB file is listed as an import while the submit request runs, and
    `job result --out` of a 32 MiB output as a fetch (the rows' fields checked when sampled)."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 << 20))
    script = 'head -c 33554432 "${IN_DIR:-/in}/data" > "${OUT_DIR:-/out}/r.bin"'
    out, seen = watch_transfers(net, 0, "submit", "--replicas", "1", "--quorum", "1", "--input", f"{big}:data",
                                "--image", "alpine:latest", "--cmd", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    view = json.loads(out.stdout)
    assert view["status"] == "verified", view
    imports = [r for r in seen if r["kind"] == "import"]
    for row in imports:
        assert (row["name"], row["cid"], row["providers"]) == ("data", None, 0)
        assert row["total"] in (None, 64 << 20) and 0 <= row["bytes"] <= 64 << 20
    executor = next(e["peer_id"] for e in view["executors"] if e["agreed"])
    ids = [net.call(i, {"op": "info"})["peer_id"] for i in range(3)]
    fetcher = next(i for i in (1, 2, 0) if ids[i] != executor)  # not the executor: the blocks travel
    wait_for(lambda: net.call(fetcher, {"op": "status", "job_id": view["job_id"]}).get("status") == "verified",
             60, f"node {fetcher} to see the verdict")
    got, fetched = watch_transfers(net, fetcher, "job", "result", view["job_id"], "--out", str(tmp_path / "res"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "res" / "r.bin").read_bytes() == big.read_bytes()[:32 << 20]
    file_cid = next(f["cid"] for f in view["files"] if f["path"] == "r.bin")
    for row in (r for r in fetched if r["kind"] == "fetch"):
        assert row["cid"] == file_cid and row["name"] == file_cid and row["total"] is None
        assert row["providers"] == 1 and 0 <= row["bytes"] <= 32 << 20
    print(f"\nsampled {len(imports)} import rows, {sum(r['kind'] == 'fetch' for r in fetched)} fetch rows"
          f" (node {fetcher} fetched from node {ids.index(executor)})")
