"""The submitter's state machine (`consensus.submitter.SubmitterJob`) driven with no network and
no clock: awards, early verdicts, replacements, ranking, offences, certificates."""

from __future__ import annotations

import pytest

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import (
    Certificate, Commit, Reveal, Withdraw, sign, verify,
)
from distributeai.consensus.ledger import Ledger
from distributeai.consensus.submitter import (
    Finished, Penalize, PublishCertificate, SendAward,
)

from .protocol_fixtures import EXECUTORS, NOW, SUBMITTER, bid, close_bidding, drive, new_job, run_executor


def test_two_of_three_verifies_and_certificate_checks_out():
    job, actions = drive([b"A\n", b"A\n", b"B\n"])
    assert job.state == "verified"
    cert = next(a for a in actions if isinstance(a, PublishCertificate)).certificate
    checked = verify_certificate(cert)
    assert checked.tally.outcome == "verified"
    assert len(checked.tally.agreeing) == 2
    assert checked.reveals[checked.tally.agreeing[0]].stdout == b"A\n"
    assert isinstance(actions[-1], Finished) and actions[-1].status == "verified"


def test_verdict_comes_as_soon_as_the_outstanding_reveal_cannot_change_it():
    job, actions = drive([b"A", b"A", b"A"])
    assert job.state == "verified"
    # the third reveal was not needed: two of three agreeing cannot be overturned by one
    assert len(verify_certificate(job.certificate).reveals) == 2


def test_no_two_alike_is_nondeterministic_and_nobody_is_punished():
    job, actions = drive([b"A", b"B", b"C"])
    assert job.state == "nondeterministic"
    checked = verify_certificate(job.certificate)
    ledger = Ledger()
    ledger.apply_certificate(checked, NOW)
    assert all(ledger.reputation_of(e.public_key) == 0 for e in EXECUTORS)
    assert not any(isinstance(a, Penalize) for a in actions)


def test_inconclusive_split_awards_one_more_executor():
    job = new_job(replicas=2, quorum=2)
    close_bidding(job, EXECUTORS[:3])
    awarded = list(job.awards)
    out = {awarded[0]: b"A", awarded[1]: b"B"}
    ids = {e.public_key: e for e in EXECUTORS}
    reveals = {}
    for e in awarded:
        commit, reveals[e] = run_executor(ids[e], job.job_id, out[e])
        job.receive_commit(verify(commit, Commit), NOW + 1)
    actions = []
    for e in awarded:
        actions += job.receive_reveal(verify(reveals[e], Reveal), NOW + 2)
    more = [x for x in actions if isinstance(x, SendAward)]
    assert len(more) == 1 and more[0].executor not in awarded
    third = ids[more[0].executor]
    commit, reveal = run_executor(third, job.job_id, b"A")
    job.receive_commit(verify(commit, Commit), NOW + 3)
    job.receive_reveal(verify(reveal, Reveal), NOW + 4)
    assert job.state == "verified"
    assert verify_certificate(job.certificate).tally.dissenting == (awarded[1],)


def test_two_independent_liars_cannot_force_nondeterministic_while_bidders_remain():
    """One honest executor and two liars with different lies: three results, no two alike. With a
    fourth bidder left, the submitter awards it instead of calling the job nondeterministic, and the
    honest answer is verified; the liars dissent."""
    job = new_job(replicas=3, quorum=2)
    close_bidding(job, EXECUTORS)  # four bids, three awards
    awarded = list(job.awards)
    ids = {e.public_key: e for e in EXECUTORS}
    out = dict(zip(awarded, [b"right", b"lie 1", b"lie 2"]))
    reveals = {}
    for e in awarded:
        commit, reveals[e] = run_executor(ids[e], job.job_id, out[e])
        job.receive_commit(verify(commit, Commit), NOW + 1)
    actions = []
    for e in awarded:
        actions += job.receive_reveal(verify(reveals[e], Reveal), NOW + 2)
    assert job.state == "running"
    more = [x for x in actions if isinstance(x, SendAward)]
    assert len(more) == 1 and more[0].executor not in awarded
    commit, reveal = run_executor(ids[more[0].executor], job.job_id, b"right")
    job.receive_commit(verify(commit, Commit), NOW + 3)
    job.receive_reveal(verify(reveal, Reveal), NOW + 4)
    assert job.state == "verified"
    checked = verify_certificate(job.certificate)
    assert checked.reveals[checked.tally.agreeing[0]].stdout == b"right"
    assert set(checked.tally.dissenting) == set(awarded[1:])


def test_bids_are_ranked_by_reputation_then_price_and_one_peer_gets_one_slot():
    job = new_job(replicas=2, quorum=1)
    job.receive_bid(bid(EXECUTORS[0], job, price=1), NOW, reputation=-10)
    job.receive_bid(bid(EXECUTORS[1], job, price=5), NOW, reputation=20)
    job.receive_bid(bid(EXECUTORS[2], job, price=1), NOW, reputation=20)
    with pytest.raises(RemoteProtocolError):
        job.receive_bid(bid(EXECUTORS[2], job), NOW)
    actions = job.tick(NOW + job.timing.bid_window_ms)
    assert [a.executor for a in actions] == [EXECUTORS[2].public_key, EXECUTORS[1].public_key]


def test_bidding_closes_early_once_n_bids_cannot_be_outranked():
    job = new_job(replicas=2, quorum=1)
    assert job.receive_bid(bid(EXECUTORS[0], job), NOW + 1, 0, unbid_best=0) == []
    actions = job.receive_bid(bid(EXECUTORS[1], job), NOW + 2, 0, unbid_best=0)
    assert job.state == "running" and [type(a) for a in actions] == [SendAward, SendAward]
    assert ("bids_closed" in [ev[1] for ev in job.history])


def test_bidding_waits_for_a_better_reputed_peer_and_never_closes_early_without_a_bound():
    fresh = new_job(replicas=2, quorum=1)
    # two fresh identities bid first while an established peer (reputation 30) has not bid yet
    assert fresh.receive_bid(bid(EXECUTORS[0], fresh), NOW + 1, 0, unbid_best=30) == []
    assert fresh.receive_bid(bid(EXECUTORS[1], fresh), NOW + 2, 0, unbid_best=30) == []
    assert fresh.state == "bidding"
    actions = fresh.receive_bid(bid(EXECUTORS[2], fresh), NOW + 3, 30, unbid_best=0)
    assert fresh.state == "running"
    assert actions[0].executor == EXECUTORS[2].public_key  # the established peer gets a slot
    plain = new_job(replicas=1, quorum=1)
    assert plain.receive_bid(bid(EXECUTORS[0], plain), NOW + 1, 50) == []  # no bound given: full window
    assert plain.state == "bidding"


def test_executor_that_misses_its_deadline_is_replaced_and_penalized_locally():
    job = new_job(result_deadline_s=5)
    close_bidding(job, EXECUTORS[:4])
    first = list(job.awards)
    assert len(first) == 3
    deadline = job.next_deadline_ms()
    ids = {e.public_key: e for e in EXECUTORS}
    for e in first[:2]:
        job.receive_commit(verify(run_executor(ids[e], job.job_id, b"A")[0], Commit), NOW + 1)
    actions = job.tick(deadline)
    assert Penalize(first[2], "never_committed") in actions
    replacement = [a for a in actions if isinstance(a, SendAward)]
    spare = ({e.public_key for e in EXECUTORS[:4]} - set(first)).pop()
    assert len(replacement) == 1 and replacement[0].executor == spare
    assert job.slot[first[2]] == "timed_out"
    # its commit, now too late, is refused and changes nothing
    with pytest.raises(RemoteProtocolError) as e:
        job.receive_commit(verify(run_executor(ids[first[2]], job.job_id, b"A")[0], Commit), deadline + 1)
    assert e.value.reason == "late_commit"
    assert [ev for ev in job.history if ev[1] == "replacement"]


def test_withdrawn_executor_is_replaced_at_once_and_errors_are_bounded():
    job = new_job(max_error_results=1)
    close_bidding(job, EXECUTORS[:4])
    first = list(job.awards)
    ids = {e.public_key: e for e in EXECUTORS}
    actions = job.receive_withdraw(verify(sign(ids[first[0]], Withdraw(job.job_id, first[0], "image missing")), Withdraw), NOW + 1)
    assert [type(a) for a in actions] == [SendAward]
    actions = job.receive_withdraw(verify(sign(ids[first[1]], Withdraw(job.job_id, first[1], "oops")), Withdraw), NOW + 2)
    assert job.state == "failed" and job.reason == "too_many_errors"
    verify_certificate(job.certificate)


def test_no_bids_fails_after_waiting():
    job = new_job()
    assert job.tick(NOW + job.timing.bid_window_ms) == []
    assert job.wants_bids
    actions = job.tick(job.next_deadline_ms())
    assert job.state == "failed" and job.reason == "no bids: no node offered to run this job"
    assert isinstance(actions[-1], Finished)


def test_certificate_with_forged_verdict_is_rejected():
    job, actions = drive([b"A", b"B", b"C"])
    cert = verify(job.certificate, Certificate).msg
    forged = Certificate(cert.job_id, "verified", verify(cert.reveals[0], Reveal).msg.result_hash,
                         cert.signed_spec, cert.awards, cert.reveals, cert.created_ms)
    with pytest.raises(RemoteProtocolError) as e:
        verify_certificate(sign(SUBMITTER, forged))
    assert e.value.reason == "bad_verdict"
    # dropping an award makes its reveal unawarded
    forged2 = Certificate(cert.job_id, cert.status, cert.result_hash, cert.signed_spec,
                          cert.awards[1:], cert.reveals, cert.created_ms)
    with pytest.raises(RemoteProtocolError):
        verify_certificate(sign(SUBMITTER, forged2))
    # fewer than k agreeing reveals cannot be verified
    good, _ = drive([b"A", b"A", b"B"])
    gc = verify(good.certificate, Certificate).msg
    agreeing = [r for r in gc.reveals if verify(r, Reveal).msg.result_hash == gc.result_hash]
    short = Certificate(gc.job_id, "verified", gc.result_hash, gc.signed_spec, gc.awards, tuple(agreeing[:1]), gc.created_ms)
    with pytest.raises(RemoteProtocolError) as e:
        verify_certificate(sign(SUBMITTER, short))
    assert e.value.reason == "bad_verdict"
    # a reveal from another job
    other, _ = drive([b"A", b"A", b"A"])
    oc = verify(other.certificate, Certificate).msg
    mixed = Certificate(gc.job_id, gc.status, gc.result_hash, gc.signed_spec, gc.awards, gc.reveals + oc.reveals[:1], gc.created_ms)
    with pytest.raises(RemoteProtocolError) as e:
        verify_certificate(sign(SUBMITTER, mixed))
    assert e.value.reason == "bad_reveal"
    # signed by someone other than the submitter
    with pytest.raises(RemoteProtocolError) as e:
        verify_certificate(sign(EXECUTORS[0], cert))
    assert e.value.reason == "wrong_signer"


def test_reveal_contradicting_its_seal_voids_the_slot_and_is_penalized():
    job = new_job()
    close_bidding(job, EXECUTORS[:3])
    for ex in EXECUTORS[:2]:
        job.receive_commit(verify(run_executor(ex, job.job_id, b"honest")[0], Commit), NOW)
    _, lying = run_executor(EXECUTORS[0], job.job_id, b"changed my mind")
    actions = job.receive_reveal(verify(lying, Reveal), NOW)
    assert Penalize(EXECUTORS[0].public_key, "seal_mismatch") in actions
    assert job.reveals == {} and job.slot[EXECUTORS[0].public_key] == "seal_mismatch"


def test_copied_seal_gains_nothing():
    """A lazy executor copies an honest executor's seal into its own commit: its reveal cannot
    match, whatever hash it reveals."""
    job = new_job()
    close_bidding(job, EXECUTORS[:3])
    honest, lazy = EXECUTORS[0], EXECUTORS[1]
    honest_commit, honest_reveal = run_executor(honest, job.job_id, b"A")
    job.receive_commit(verify(honest_commit, Commit), NOW)
    copied = sign(lazy, Commit(job.job_id, lazy.public_key, verify(honest_commit, Commit).msg.seal))
    job.receive_commit(verify(copied, Commit), NOW)
    _, lazy_reveal = run_executor(lazy, job.job_id, b"A")  # even the right answer
    actions = job.receive_reveal(verify(lazy_reveal, Reveal), NOW + 1)
    assert Penalize(lazy.public_key, "seal_mismatch") in actions
    # and replaying the honest executor's signed commit is refused as its author's, not the lazy one's
    with pytest.raises(RemoteProtocolError) as e:
        job.receive_commit(verify(honest_commit, Commit), NOW + 1)
    assert e.value.reason == "duplicate"


def test_commit_from_unawarded_peer_and_duplicate_bids_are_rejected():
    job = new_job()
    b = bid(EXECUTORS[0], job)
    job.receive_bid(b, NOW)
    with pytest.raises(RemoteProtocolError) as e:
        job.receive_bid(b, NOW)
    assert e.value.reason == "duplicate"
    commit, _ = run_executor(EXECUTORS[3], job.job_id, b"x")
    with pytest.raises(RemoteProtocolError) as e:
        job.receive_commit(verify(commit, Commit), NOW)
    assert e.value.reason == "not_awarded"
