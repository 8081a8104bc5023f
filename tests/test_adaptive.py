"""Adaptive replication in the pure core (issue 18, item 2): a trusted bidder runs a job alone,
the spot-check draw over its seal, escalation, homogeneous awards, and every certificate forgery
of the draw rejected by `verify_certificate`."""

from __future__ import annotations

import dataclasses

import pytest

from distributeai.consensus.adaptive import Evidence, check_probability, sign_draw, spot_check
from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import Award, Bid, Certificate, Commit, Reveal, Withdraw, job_id_of, sign, verify
from distributeai.consensus.results import result_hash, seal
from distributeai.consensus.submitter import (
    Finished, RequestReveal, SendAward, SubmitterJob, apply_input, decode_input, replay,
)

from .protocol_fixtures import EXECUTORS, NOW, SUBMITTER, ident, make_spec, run_executor

ALWAYS, NEVER = 1_000_000, 0  # spot_check_floor_ppm
TRUSTED_CV = 1 << 32  # 1/CV is about 2^-32: with floor 0 the draw says "no check"


def adaptive_job(floor_ppm: int, **kw) -> SubmitterJob:
    spec = make_spec(verification="adaptive", trust_threshold=kw.pop("threshold", 10),
                     spot_check_floor_ppm=floor_ppm, **kw)
    return SubmitterJob(SUBMITTER, sign(SUBMITTER, spec), spec, started_ms=NOW)


def bid_of(ex, job, platform=("x86_64", "GenuineIntel", "")):
    return verify(sign(ex, Bid(job.job_id, ex.public_key, 1, 1000, 256, ("process",), NOW, platform=platform)), Bid)


def close(job: SubmitterJob, trust: list[int], platforms=None) -> list:
    """Every executor bids, the first with the best reputation (so it ranks first), with its CV."""
    for i, ex in enumerate(EXECUTORS[: len(trust)]):
        b = bid_of(ex, job, *(platforms[i:i + 1] if platforms else ()))
        assert apply_input(job, "bid", b, {"reputation": 50 - i, "trust": trust[i]}, NOW) == []
    return apply_input(job, "tick", b"", {}, NOW + job.timing.bid_window_ms)


def awarded(actions) -> list[bytes]:
    return [a.executor for a in actions if isinstance(a, SendAward)]


def deliver(job: SubmitterJob, ex, stdout: bytes, at: int) -> list:
    """`ex` commits, then reveals if asked: the actions of both."""
    commit, reveal = run_executor(ex, job.job_id, stdout)
    actions = job.receive_commit(verify(commit, Commit), at)
    if any(isinstance(a, RequestReveal) and a.executor == ex.public_key for a in actions):
        actions += job.receive_reveal(verify(reveal, Reveal), at + 1)
    return actions


def finished(actions) -> Finished | None:
    return next((a for a in actions if isinstance(a, Finished)), None)


def test_a_trusted_best_bidder_runs_alone_and_the_certificate_proves_the_draw():
    job = adaptive_job(NEVER)
    assert awarded(close(job, [TRUSTED_CV, 0, 0])) == [EXECUTORS[0].public_key]
    assert job.mode == "single" and job.trusted == EXECUTORS[0].public_key
    actions = deliver(job, EXECUTORS[0], b"ok\n", NOW + 2000)
    assert job.drawn is False and finished(actions).status == "verified"
    checked = verify_certificate(job.certificate)
    assert checked.mode == "single" and len(checked.reveals) == 1 and checked.trusted == EXECUTORS[0].public_key
    assert checked.certificate.evidence.cv == TRUSTED_CV


def test_a_bidder_below_the_threshold_is_replicated():
    job = adaptive_job(NEVER)
    assert len(awarded(close(job, [9, 50, 50]))) == 3  # only the best-ranked bidder's CV counts
    assert job.mode == "replicated"


def test_a_drawn_check_awards_a_second_executor_and_agreement_certifies_both():
    job = adaptive_job(ALWAYS)
    close(job, [TRUSTED_CV, 0, 0])
    actions = deliver(job, EXECUTORS[0], b"ok\n", NOW + 2000)
    # The trusted executor's reveal is asked for at once, check or not; the checker is awarded.
    assert any(isinstance(a, RequestReveal) for a in actions) and awarded(actions) == [EXECUTORS[1].public_key]
    assert job.mode == "checking" and not job.done
    actions = deliver(job, EXECUTORS[1], b"ok\n", NOW + 3000)
    assert finished(actions).status == "verified"
    checked = verify_certificate(job.certificate)
    assert checked.mode == "spot_checked" and set(checked.tally.agreeing) == {e.public_key for e in EXECUTORS[:2]}


def test_a_check_that_disagrees_escalates_to_k_of_n_and_the_liar_dissents():
    job = adaptive_job(ALWAYS)
    close(job, [TRUSTED_CV, 0, 0, 0])
    deliver(job, EXECUTORS[0], b"wrong\n", NOW + 2000)
    actions = deliver(job, EXECUTORS[1], b"ok\n", NOW + 3000)
    assert job.mode == "replicated" and awarded(actions) == [EXECUTORS[2].public_key]
    actions = deliver(job, EXECUTORS[2], b"ok\n", NOW + 4000)
    assert finished(actions).status == "verified"
    checked = verify_certificate(job.certificate)
    assert checked.mode == "replicated" and checked.tally.dissenting == (EXECUTORS[0].public_key,)
    assert "escalated" in [h[1] for h in job.history]


def test_a_trusted_executor_that_withdraws_leaves_the_job_replicated():
    job = adaptive_job(NEVER)
    close(job, [TRUSTED_CV, 0, 0, 0])
    w = verify(sign(EXECUTORS[0], Withdraw(job.job_id, EXECUTORS[0].public_key, "sandbox failed")), Withdraw)
    actions = job.receive_withdraw(w, NOW + 1500)
    assert job.mode == "replicated" and len(awarded(actions)) == 3


def test_replay_rebuilds_the_same_draw_and_mode():
    job = adaptive_job(ALWAYS)
    inputs = [("start", job.signed_spec, {}, NOW)]
    for i, ex in enumerate(EXECUTORS[:3]):
        b = bid_of(ex, job)
        meta = {"reputation": 50 - i, "trust": [TRUSTED_CV, 0, 0][i]}
        apply_input(job, "bid", b, meta, NOW)
        inputs.append(("bid", b.raw, meta, NOW))
    apply_input(job, "tick", b"", {}, NOW + job.timing.bid_window_ms)
    inputs.append(("tick", b"", {}, NOW + job.timing.bid_window_ms))
    commit, _ = run_executor(EXECUTORS[0], job.job_id, b"ok\n")
    apply_input(job, "commit", decode_input("commit", commit), {}, NOW + 2000)
    inputs.append(("commit", commit, {}, NOW + 2000))
    again = replay(SUBMITTER, job.timing, inputs)
    assert (again.mode, again.draw, again.drawn, list(again.awards)) == (job.mode, job.draw, job.drawn, list(job.awards))


def test_the_coin_is_fair_at_the_stated_probability():
    """Over many seals the draw checks about max(1/CV, floor) of them (a property of SHA-256)."""
    sigs = [sign_draw(SUBMITTER, b"j" * 32, bytes([i % 256, i // 256]) * 16) for i in range(4000)]
    for cv, floor in ((4, 0), (100, 50_000), (10, 200_000)):
        share = sum(spot_check(s, cv, floor) for s in sigs) / len(sigs)
        assert abs(share - check_probability(cv, floor)) < 0.04


def test_homogeneous_jobs_award_only_executors_of_the_first_awards_platform():
    arm, intel = ("aarch64", "", ""), ("x86_64", "GenuineIntel", "")
    job = adaptive_job(NEVER, homogeneous=("arch",), max_total_results=6)
    actions = close(job, [0, 0, 0, 0], [intel, arm, intel, intel])
    assert awarded(actions) == [EXECUTORS[0].public_key, EXECUTORS[2].public_key, EXECUTORS[3].public_key]


# --- forged certificates ------------------------------------------------------------------------

def single_run_certificate() -> tuple[SubmitterJob, Certificate]:
    job = adaptive_job(NEVER)
    close(job, [TRUSTED_CV, 0, 0])
    deliver(job, EXECUTORS[0], b"ok\n", NOW + 2000)
    return job, verify(job.certificate, Certificate).msg


def reason_of(cert: Certificate) -> str:
    with pytest.raises(RemoteProtocolError) as e:
        verify_certificate(sign(SUBMITTER, cert))
    return e.value.reason


def test_a_forged_draw_is_rejected():
    _, cert = single_run_certificate()
    ev = cert.evidence
    forged = dataclasses.replace(ev, draw=bytes([ev.draw[0] ^ 1]) + ev.draw[1:])
    assert reason_of(dataclasses.replace(cert, evidence=forged)) == "bad_evidence"


def test_a_draw_over_another_seal_is_rejected():
    job, cert = single_run_certificate()
    other = seal(EXECUTORS[0].public_key, job.job_id, result_hash(0, False, b"other\n", False))
    forged = dataclasses.replace(cert.evidence, draw=sign_draw(SUBMITTER, job.job_id, other))
    assert reason_of(dataclasses.replace(cert, evidence=forged)) in ("bad_evidence",)


def test_a_missing_draw_leaves_one_result_short_of_the_quorum():
    _, cert = single_run_certificate()
    assert reason_of(dataclasses.replace(cert, evidence=None)) == "bad_verdict"


def test_an_executor_below_the_threshold_is_rejected():
    _, cert = single_run_certificate()
    assert reason_of(dataclasses.replace(cert, evidence=dataclasses.replace(cert.evidence, cv=9))) == "bad_evidence"


def test_a_check_that_was_drawn_cannot_be_certified_as_a_single_run():
    """A submitter that drew a check and publishes the trusted executor's result alone."""
    job = adaptive_job(ALWAYS)
    close(job, [TRUSTED_CV, 0, 0])
    deliver(job, EXECUTORS[0], b"ok\n", NOW + 2000)
    commit = job.commits[EXECUTORS[0].public_key].raw
    cert = Certificate(job.job_id, "verified", job.reveals[EXECUTORS[0].public_key].msg.result_hash, job.signed_spec,
                       (job.awards[EXECUTORS[0].public_key].raw,), (job.reveals[EXECUTORS[0].public_key].raw,),
                       NOW + 5000, evidence=Evidence(TRUSTED_CV, job.draw, commit))
    assert reason_of(cert) == "bad_verdict"


def test_a_draw_for_an_executor_without_the_first_slot_is_rejected():
    job, cert = single_run_certificate()
    stranger = ident(77)
    commit, _ = run_executor(stranger, job.job_id, b"ok\n")
    c = verify(commit, Commit).msg
    forged = Evidence(TRUSTED_CV, sign_draw(SUBMITTER, job.job_id, c.seal), commit)
    assert reason_of(dataclasses.replace(cert, evidence=forged)) == "bad_evidence"


def test_a_replicate_job_carries_no_draw():
    job, _ = single_run_certificate()
    spec = dataclasses.replace(job.spec, verification="replicate")
    signed_spec = sign(SUBMITTER, spec)
    job_id = job_id_of(signed_spec)
    award = sign(SUBMITTER, Award(job_id, EXECUTORS[0].public_key, 0, NOW + 90_000))
    commit, reveal = run_executor(EXECUTORS[0], job_id, b"ok\n")
    draw = sign_draw(SUBMITTER, job_id, verify(commit, Commit).msg.seal)
    forged = Certificate(job_id, "verified", result_hash(0, False, b"ok\n", False), signed_spec, (award,), (reveal,),
                         NOW + 5000, evidence=Evidence(TRUSTED_CV, draw, commit))
    assert reason_of(forged) == "bad_evidence"


def test_a_homogeneous_certificate_with_mixed_platforms_is_rejected():
    arm, intel = ("aarch64", "", ""), ("x86_64", "GenuineIntel", "")
    spec = make_spec(homogeneous=("arch",), replicas=2, quorum=2, max_total_results=4)
    signed_spec = sign(SUBMITTER, spec)
    job_id = job_id_of(signed_spec)
    awards, reveals, bids = [], [], []
    for slot, (ex, platform) in enumerate(((EXECUTORS[0], intel), (EXECUTORS[1], arm))):
        awards.append(sign(SUBMITTER, Award(job_id, ex.public_key, slot, NOW + 90_000)))
        reveals.append(run_executor(ex, job_id, b"ok\n")[1])
        bids.append(sign(ex, Bid(job_id, ex.public_key, 1, 1000, 256, ("process",), NOW, platform=platform)))
    cert = Certificate(job_id, "verified", result_hash(0, False, b"ok\n", False), signed_spec, tuple(awards),
                       tuple(reveals), NOW + 5000, bids=tuple(bids))
    assert reason_of(cert) == "bad_award"
