"""The bootstrap counts only what a node would accept (issue 13, "one gossip check"): a real
bootstrap process, started as a devnet starts it, and a real libp2p peer that publishes on the
jobs topic. A certificate relayed by a stranger (`wrong_sender`) and an announcement without its
proof-of-work (`weak_identity`) are rejected by reason and counted nowhere; a valid announcement
and a valid certificate by their author are counted, and a replay of the certificate is not."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from distributeai.tools.devnet import DEVNET_POW_DIFFICULTY, Devnet
from distributeai.consensus.codec import Identity
from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.messages import Announce, Commit, JobSpec, Reveal, job_id_of, sign, verify
from distributeai.consensus.names import JOBS_TOPIC
from distributeai.consensus.pow import solve
from distributeai.consensus.submitter import SubmitterJob

from .netfixtures import wait_for
from .protocol_fixtures import EXECUTORS, NOW, SUBMITTER, close_bidding, make_spec, run_executor
from .test_p2p import PeerProcess, _ready

SETTLE_S = 30  # a bound on the wait for gossip to reach the bootstrap, not a pause


def announcement(me: Identity, pow_nonce: bytes) -> tuple[bytes, str]:
    """A fresh announcement by `me` with this proof-of-work nonce, and its job id (hex)."""
    spec = sign(me, JobSpec(submitter=me.public_key, nonce=os.urandom(16), created_ms=int(time.time() * 1000),
                            name="counted?", image="alpine:latest", command=("true",)))
    return sign(me, Announce(spec, (), pow_nonce)), job_id_of(spec).hex()


def certificate_by(submitter: Identity, nonce: bytes) -> bytes:
    """A valid certificate (2 of 2 agreeing) of a job submitted by `submitter`."""
    spec = make_spec(submitter=submitter.public_key, replicas=2, quorum=2, nonce=nonce)
    job = SubmitterJob(submitter, sign(submitter, spec), spec, started_ms=NOW)
    close_bidding(job, EXECUTORS[:2])
    reveals = []
    for ex in EXECUTORS[:2]:
        commit, reveal = run_executor(ex, job.job_id, b"A")
        reveals.append(reveal)
        job.receive_commit(verify(commit, Commit), NOW + 1)
    for reveal in reveals:
        if not job.done:
            job.receive_reveal(verify(reveal, Reveal), NOW + 2)
    assert job.certificate
    return job.certificate


def stats_of(http_url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy
    return json.loads(opener.open(http_url + "/api/stats", timeout=10).read())


@pytest.mark.slow
async def test_bootstrap_counts_only_what_a_node_accepts(tmp_path):
    # The peer publishes under SUBMITTER's key: the valid messages are its own, so only what is
    # wrong with the other two makes them rejected.
    key_file = tmp_path / "peer.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, bytes([1]) * 32)  # tests/protocol_fixtures.py ident(1), SUBMITTER
    os.close(fd)
    stranger = Identity.from_seed(bytes([9]) * 32)
    with Devnet(tmp_path / "net", nodes=0, sandbox="process") as net:  # the bootstrap alone
        net.start()
        boot_id = net.bootstrap_addr.rsplit("/p2p/", 1)[1]
        peer = PeerProcess("peer", key_file, tmp_path, "--bootstrap", net.bootstrap_addr, "--topic", JOBS_TOPIC)
        try:
            assert (await peer.wait(_ready, 30))["peer_id"] != boot_id
            await peer.wait(lambda ev: any(e["event"] == "mesh" and e["topic"] == JOBS_TOPIC and boot_id in e["peers"]
                                           for e in ev), 30)
            own = certificate_by(SUBMITTER, b"\x03" * 16)
            relayed = certificate_by(stranger, b"\x04" * 16)  # a stranger's, relayed by SUBMITTER's peer
            weak, _ = announcement(SUBMITTER, b"")  # valid but for its proof-of-work
            valid, valid_job = announcement(SUBMITTER, solve(SUBMITTER.public_key, DEVNET_POW_DIFFICULTY))
            for data in (relayed, weak, valid, own, own):  # the last one: a replay
                reply = await peer.call(cmd="publish", topic=JOBS_TOPIC, data=data.hex())
                assert reply["ok"], reply

            def settled():  # every message counted, as a job or as a rejection
                s = stats_of(net.http_url)
                return s if sum(s["rejected"].values()) + s["jobs_announced"] + s["jobs_certified"] >= 5 else None

            s = wait_for(settled, SETTLE_S, "the bootstrap to see all five messages")
            assert s["rejected"] == {"wrong_sender": 1, "weak_identity": 1, "replay": 1}, s["rejected"]
            assert (s["jobs_announced"], s["jobs_certified"], s["jobs_verified"]) == (1, 1, 1), s
            assert {j["job_id"] for j in s["recent_jobs"]} == {
                valid_job, verify_certificate(own).certificate.job_id.hex()}, s["recent_jobs"]
        finally:
            peer.stop()
