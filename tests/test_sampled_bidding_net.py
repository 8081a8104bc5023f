"""Sampled bidding with real node processes (issue 17, item 1): 8 nodes on 127.0.0.1, the
submitter started with `--bid-sample-factor 1`, so a job of 2 replicas is announced to about 2 of
its 8 (1/4 of the key space, consensus/sampling.py initial_share(8, 2, 1)).

The test signs each job itself, choosing the spec's nonce (hence the job id, hence who is
eligible) so the case it wants is certain, not likely:
1. a job that 2 nodes are eligible for: it verifies, and every node not eligible at the job's
   final share (the submitter's view, after any widening) has seen the announcement and sent
   neither a bid nor a decline (their counters);
2. a job only 2 nodes can run (the others offer too little memory), at most one of them eligible
   at the first share: the submitter widens (signed Widen gossip) until both may bid, and the job
   verifies, its status saying it was widened;
3. an attacker peer publishes widenings that must change nothing: of a job it did not submit
   (`wrong_signer`), of an unknown job (`unknown_job`), the submitter's words under its own
   author (`wrong_sender`), and of its own job one that does not grow the share (`replay`);
   each is counted by the node that got it, and the network still runs (the bootstrap too).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from distributeai.consensus.codec import Identity
from distributeai.consensus.messages import Announce, JobSpec, Widen, job_id_of, sign
from distributeai.consensus.names import JOBS_TOPIC
from distributeai.consensus.sampling import SHARE_ALL, eligible, initial_share
from distributeai.node.paths import key_path
from distributeai.p2p.identity import load_or_create_key
from distributeai.tools.devnet import Devnet

from .netfixtures import cli, wait_for
from .p2p_peer import proof_of_work
from .test_p2p import PeerProcess, _ready

NODES = 8
REPLICAS = 2
SMALL = ("--memory-mb", "128")  # under the second job's 256 MiB: such a node declines it
JOB_S = 120.0
COMMAND = ("sh", "-c", "echo sampled")


def grind(submitter: Identity, keys: list[bytes], share: int, wanted, **fields) -> bytes:
    """A signed spec whose job id makes `wanted(eligible keys at share)` true (a fresh nonce each try)."""
    for _ in range(100_000):
        spec = JobSpec(submitter=submitter.public_key, nonce=os.urandom(16), created_ms=int(time.time() * 1000),
                       name="sampled", image="alpine:latest", command=COMMAND, replicas=REPLICAS, quorum=REPLICAS, **fields)
        signed = sign(submitter, spec)
        job_id = job_id_of(signed)
        if wanted({k for k in keys if eligible(job_id, k, share)}):
            return signed
    raise AssertionError("no nonce found")


def counters(net: Devnet, i: int) -> dict:
    info = net.info(i)
    return {**info["counters"], **{f"rejected_{k}": v for k, v in info["rejected"].items()}}


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_sampled_bidding_silences_the_ineligible_and_widens_when_short(tmp_path):
    small = {i: SMALL for i in (0, *range(3, NODES))}  # nodes 2 and 3 (indices 1, 2) can run 256 MiB
    small[0] = (*SMALL, "--bid-sample-factor", "1")
    with Devnet(tmp_path / "net", nodes=NODES, sandbox="process", node_args=small) as net:
        net.start()
        net.wait_connected()
        ids = [Identity.from_seed(load_or_create_key(key_path(d))) for d in net.node_dirs]
        keys = [i.public_key for i in ids]
        wait_for(lambda: net.info(0)["network_size_estimate"] == NODES, 60, "the submitter to count 8 nodes")
        share = initial_share(NODES, REPLICAS, 1)
        assert share == SHARE_ALL // 4

        # --- 1. the ineligible say nothing --------------------------------------------------
        first = grind(ids[0], keys, share, lambda e: len(e) == 2 and keys[0] not in e, memory_mb=64)
        job1 = net.call(0, {"op": "submit", "signed_spec": first.hex()})["job_id"]
        view = net.call(0, {"op": "wait", "job_id": job1, "timeout": JOB_S}, timeout=JOB_S + 30)
        assert view["status"] == "verified", view
        final = round(view["share"] * SHARE_ALL)
        silent = [i for i in range(1, NODES) if not eligible(bytes.fromhex(job1), keys[i], final)]
        if view["widenings"] == 0:  # else bids came too slowly for the window and more nodes were asked
            assert len(silent) == NODES - 1 - 2
        for i in silent:
            # It stored the announcement (and so decided), then sent nothing.
            wait_for(lambda i=i: net.call(i, {"op": "status", "job_id": job1}).get("status"), 60,
                     f"node {i + 1} to know the job")
            seen = counters(net, i)
            assert seen.get("not_eligible", 0) >= 1, (i, seen)
            assert seen.get("bids_sent", 0) == 0 and seen.get("declines_sent", 0) == 0, (i, seen)

        # --- 2. too few can run it: widened until they may -----------------------------------
        capable = {keys[1], keys[2]}
        second = grind(ids[0], keys, share, lambda e: len(e & capable) <= 1, memory_mb=256)
        job2 = net.call(0, {"op": "submit", "signed_spec": second.hex()})["job_id"]
        view = net.call(0, {"op": "wait", "job_id": job2, "timeout": JOB_S}, timeout=JOB_S + 30)
        assert view["status"] == "verified", view
        assert view["widenings"] >= 1 and view["share"] > 0.25
        assert any(h["event"] == "bids_widened" for h in view["history"])
        assert {e["peer_id"] for e in view["executors"] if e["agreed"]} == {net.node_info[1]["peer_id"],
                                                                            net.node_info[2]["peer_id"]}
        shown = cli("job", "status", job2, "--data-dir", str(net.node_dirs[0]))
        assert shown.returncode == 0, shown.stderr
        assert "widened" in shown.stdout and "bidding  open to" in shown.stdout
        assert counters(net, 0).get("widened", 0) >= 1

        # --- 3. widenings that must change nothing -------------------------------------------
        attacker = PeerProcess("attacker", tmp_path / "attacker.key", tmp_path,
                               "--bootstrap", net.bootstrap_addr, "--topic", JOBS_TOPIC)
        try:
            attacker.wait_sync(_ready, 60)
            me = Identity.from_seed(load_or_create_key(tmp_path / "attacker.key"))
            node_ids = [n["peer_id"] for n in net.node_info]

            def meshed(events: list) -> set:
                meshes = [e for e in events if e["event"] == "mesh" and e["topic"] == JOBS_TOPIC]
                return set(meshes[-1]["peers"]) & set(node_ids) if meshes else set()

            # Bad gossip is dropped, not relayed: only nodes in the attacker's mesh count it.
            await attacker.wait(meshed, 120)
            target = node_ids.index(sorted(meshed(attacker.events))[0])
            now = int(time.time() * 1000)
            own = sign(me, JobSpec(submitter=me.public_key, nonce=os.urandom(16), created_ms=now, name="evil",
                                   image="alpine:latest", command=("true",)))
            own_id = job_id_of(own)
            announce = sign(me, Announce(own, (), proof_of_work(me), SHARE_ALL // 8))
            assert (await attacker.call(cmd="publish", topic=JOBS_TOPIC, data=announce.hex()))["ok"]
            wait_for(lambda: net.call(target, {"op": "status", "job_id": own_id.hex()}).get("status"), 60,
                     "the target node to store the attacker's announcement")
            before = counters(net, target)
            bad = {
                "wrong_signer": sign(me, Widen(bytes.fromhex(job2), SHARE_ALL, now)),
                "unknown_job": sign(me, Widen(os.urandom(32), SHARE_ALL, now)),
                "wrong_sender": sign(ids[0], Widen(bytes.fromhex(job2), SHARE_ALL, now)),
                "replay": sign(me, Widen(own_id, SHARE_ALL // 16, now)),  # smaller than announced
            }
            for data in bad.values():
                assert (await attacker.call(cmd="publish", topic=JOBS_TOPIC, data=data.hex()))["ok"]

            def all_counted():
                seen = counters(net, target)
                return all(seen.get(f"rejected_{r}", 0) > before.get(f"rejected_{r}", 0) for r in bad) and seen

            after = wait_for(all_counted, 60, f"node {target + 1} to count every bad widening")
            assert after.get("widenings_in", 0) == before.get("widenings_in", 0)
        finally:
            attacker.stop()
        # The bootstrap took the same gossip without failing, and still answers.
        import urllib.request

        with urllib.request.urlopen(net.http_url + "/api/stats", timeout=30) as answer:
            stats = json.loads(answer.read())
        assert stats["jobs_announced"] >= 2
