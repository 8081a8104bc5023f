"""Forged adaptive certificates (issue 18, bad input): a real attacker process joins a running
3-node network as a submitter and gossips certificates of its own jobs that claim what their
signatures do not support: a single run with a forged draw, with no draw, with a draw that
called a check, with a claimed count below the job's threshold, a numeric verdict whose numbers
are out of tolerance, a homogeneous job run on two platforms. Every node rejects each, counted by
reason, and nothing changes. A certificate claiming a count above what the nodes hold is counted
as `untrusted_executor` and its job shown as rejected on every node (it joins the set all the
same, so that sets converge)."""

from __future__ import annotations

import os
import time

import pytest

from distributeai.consensus.adaptive import Evidence, sign_draw, spot_check
from distributeai.consensus.codec import Identity
from distributeai.consensus.compare import Compare
from distributeai.consensus.executor import make_commit, make_reveal
from distributeai.consensus.messages import Award, Bid, Certificate, Commit, JobSpec, Reveal, job_id_of, sign, verify
from distributeai.consensus.names import JOBS_TOPIC
from distributeai.tools.devnet import Devnet

from .netfixtures import wait_for
from .test_hostile import meshed_attacker, state_of

TRUSTED = 1 << 32  # a claimed count whose 1/CV is about 2^-32: with floor 0 the draw says "no check"


class Forger:
    """Certificates of the attacker's own jobs, each a fresh job, signed as a submitter signs them."""

    def __init__(self, me: Identity) -> None:
        self.me = me
        self.executors = [Identity.from_seed(os.urandom(32)) for _ in range(2)]

    def job(self, **fields) -> tuple[bytes, bytes, JobSpec]:
        spec = JobSpec(submitter=self.me.public_key, nonce=os.urandom(16), created_ms=int(time.time() * 1000),
                       name="forged", image="alpine:latest", command=("true",), **fields)
        signed = sign(self.me, spec)
        return signed, job_id_of(signed), spec

    def single_run(self, *, cv: int = TRUSTED, floor: int = 0, draw: str = "honest", threshold: int = 10) -> bytes:
        """An adaptive job run by one executor alone, certified verified on its one result."""
        signed, job_id, _ = self.job(verification="adaptive", trust_threshold=threshold, spot_check_floor_ppm=floor)
        ex = self.executors[0]
        reveal = make_reveal(ex, job_id, 0, False, b"ok\n")
        r = verify(reveal, Reveal).msg
        commit = make_commit(ex, job_id, r.result_hash)
        signature = sign_draw(self.me, job_id, verify(commit, Commit).msg.seal)
        if draw == "flipped":
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        evidence = None if draw == "none" else Evidence(cv, signature, commit)
        award = sign(self.me, Award(job_id, ex.public_key, 0, int(time.time() * 1000) + 90_000))
        return sign(self.me, Certificate(job_id, "verified", r.result_hash, signed, (award,), (reveal,),
                                         int(time.time() * 1000), evidence=evidence))

    def replicated(self, stdouts: list[bytes], platforms=None, **fields) -> bytes:
        """A 2-of-2 job certified verified on the first executor's result, whatever the others said."""
        signed, job_id, _ = self.job(replicas=2, quorum=2, **fields)
        now = int(time.time() * 1000)
        awards, reveals, bids = [], [], []
        for slot, (ex, out) in enumerate(zip(self.executors, stdouts)):
            awards.append(sign(self.me, Award(job_id, ex.public_key, slot, now + 90_000)))
            reveals.append(make_reveal(ex, job_id, 0, False, out))
            if platforms:
                bids.append(sign(ex, Bid(job_id, ex.public_key, 1, 1000, 256, ("process",), now, platform=platforms[slot])))
        claimed = verify(reveals[0], Reveal).msg.result_hash
        return sign(self.me, Certificate(job_id, "verified", claimed, signed, tuple(awards), tuple(reveals), now,
                                         bids=tuple(bids)))


@pytest.mark.slow
async def test_forged_adaptive_certificates_are_rejected_and_counted_by_every_node(tmp_path):
    with Devnet(tmp_path / "net", nodes=3, sandbox="process") as net:
        net.start()
        net.wait_connected()
        attacker, me = await meshed_attacker(net, tmp_path)
        try:
            before = [state_of(net, i) for i in range(3)]
            f = Forger(me)
            numeric = Compare("numeric", "1e-9", "0", ())
            # A draw with the floor at 1.0 always calls a check: certifying the one result is a lie.
            checked_single = f.single_run(floor=1_000_000)
            assert spot_check(verify(checked_single, Certificate).msg.evidence.draw, TRUSTED, 1_000_000)
            forged = {
                "bad_evidence": [f.single_run(draw="flipped"), f.single_run(cv=9, threshold=10)],
                "bad_verdict": [f.single_run(draw="none"), checked_single,
                                f.replicated([b"1.0\n", b"2.0\n"], compare=numeric)],
                "bad_award": [f.replicated([b"ok\n", b"ok\n"], [("x86_64", "", ""), ("aarch64", "", "")],
                                           homogeneous=("arch",), max_total_results=4)],
            }
            for sends in forged.values():
                for data in sends:
                    assert (await attacker.call(cmd="publish", topic=JOBS_TOPIC, data=data.hex()))["ok"]
            for i in range(3):
                wait_for(lambda i=i: all(net.info(i)["rejected"].get(r, 0) >= len(s) for r, s in forged.items()), 60,
                         f"node {i + 1} to count every forged certificate")
            # Nothing changed: the same jobs, reputations and credits on every node.
            assert [state_of(net, i) for i in range(3)] == before

            # A claim above what the nodes count (they hold no certificate of this executor).
            unfounded = f.single_run(cv=TRUSTED)
            assert (await attacker.call(cmd="publish", topic=JOBS_TOPIC, data=unfounded.hex()))["ok"]
            job_id = verify(unfounded, Certificate).msg.job_id.hex()
            for i in range(3):
                wait_for(lambda i=i: net.info(i)["rejected"].get("untrusted_executor", 0) >= 1, 60,
                         f"node {i + 1} to count the unfounded claim")
                view = net.call(i, {"op": "status", "job_id": job_id})
                assert view["verification"] == "single" and "untrusted executor" in view["rejected"]
                assert view["verification_note"].startswith("rejected")
            for i in range(3):
                assert net.node_procs[i].poll() is None
        finally:
            attacker.stop()
