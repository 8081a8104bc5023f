"""Protocol fixtures shared by the tests of the pure core: fixed identities and time, a job spec,
and a submitter state machine driven with no network (bids, executors' commits and reveals)."""

from __future__ import annotations


from distributeai.consensus.codec import Identity
from distributeai.consensus.messages import (
    Bid, Commit, JobSpec, Reveal, sign, verify,
)
from distributeai.consensus.results import result_hash, seal
from distributeai.consensus.submitter import (
    RequestReveal, SendAward, SubmitterJob,
)

NOW = 1_700_000_000_000


def ident(i: int) -> Identity:
    return Identity.from_seed(bytes([i]) * 32)


SUBMITTER = ident(1)
EXECUTORS = [ident(i) for i in (2, 3, 4, 5)]


def make_spec(**kw) -> JobSpec:
    fields = dict(submitter=SUBMITTER.public_key, nonce=b"\x07" * 16, created_ms=NOW, name="demo",
                  image="alpine:latest", command=("sh", "-c", "echo 'Hello' | sha256sum"))
    fields.update(kw)
    return JobSpec(**fields)


def run_executor(executor: Identity, job_id: bytes, stdout: bytes):
    rh = result_hash(0, False, stdout, False)
    commit = sign(executor, Commit(job_id, executor.public_key, seal(executor.public_key, job_id, rh)))
    reveal = sign(executor, Reveal(job_id, executor.public_key, rh, 0, stdout, False, False))
    return commit, reveal


def bid(ex: Identity, job: SubmitterJob, price: int = 1):
    return verify(sign(ex, Bid(job.job_id, ex.public_key, price, 1000, 256, ("process",), NOW)), Bid)


def new_job(**spec_fields) -> SubmitterJob:
    spec = make_spec(**spec_fields)
    return SubmitterJob(SUBMITTER, sign(SUBMITTER, spec), spec, started_ms=NOW)


def close_bidding(job: SubmitterJob, bidders, reputations=None) -> list:
    for i, ex in enumerate(bidders):
        assert job.receive_bid(bid(ex, job), NOW, (reputations or {}).get(i, 0)) == []
    return job.tick(NOW + job.timing.bid_window_ms)


def drive(outputs: list[bytes], quorum: int = 2):
    job = new_job(replicas=len(outputs), quorum=quorum)
    actions = close_bidding(job, EXECUTORS[: len(outputs)])
    assert [type(a) for a in actions] == [SendAward] * len(outputs)
    assert job.state == "running"
    reveals, actions = {}, []
    for ex, out in zip(EXECUTORS, outputs):
        commit, reveals[ex.public_key] = run_executor(ex, job.job_id, out)
        actions += job.receive_commit(verify(commit, Commit), NOW + 1)
    assert {a.executor for a in actions if isinstance(a, RequestReveal)} == set(reveals)
    actions = []
    for e, r in reveals.items():
        if not job.done:
            actions += job.receive_reveal(verify(r, Reveal), NOW + 2)
    return job, actions


def certified_job(outputs: list[bytes], quorum: int = 2, **spec_fields) -> SubmitterJob:
    """A job run to its end by EXECUTORS[:len(outputs)], each revealing its output (reveals stop
    once the job is decided): `job.certificate` is its signed certificate."""
    job = new_job(replicas=len(outputs), quorum=quorum, **spec_fields)
    close_bidding(job, EXECUTORS[: len(outputs)])
    reveals = {}
    for ex, out in zip(EXECUTORS, outputs):
        commit, reveals[ex] = run_executor(ex, job.job_id, out)
        job.receive_commit(verify(commit, Commit), NOW + 1)
    for ex in reveals:
        if not job.done:
            job.receive_reveal(verify(reveals[ex], Reveal), NOW + 2)
    assert job.certificate
    return job
