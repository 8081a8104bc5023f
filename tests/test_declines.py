"""Declines (consensus.messages.Decline) in the submitter's state machine and its certificate, as
pure code: a job nobody can run fails as soon as that is certain, with the reasons counted by
kind; the certificate carries the signed declines and bids, and a forged one is refused."""

from __future__ import annotations

import pytest

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.declines import failure_reason, summary
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import Certificate, Decline, sign, verify
from distributeai.consensus.submitter import Finished, PublishCertificate, SendAward, apply_input, replay

from .protocol_fixtures import EXECUTORS, NOW, SUBMITTER, bid, make_spec, new_job


def feed(job, kind, payload, undecided, now=NOW):
    """One input as the node applies it: with the undecided peers it saw (`apply_input`)."""
    return apply_input(job, kind, payload, {"undecided": undecided}, now)


def tick(job, undecided, now=None):
    return feed(job, "tick", b"", undecided, job.started_ms + job.timing.bid_window_ms if now is None else now)


def decline(ex, job, code="image_missing", detail="image alpine:latest is not available locally"):
    return verify(sign(ex, Decline(job.job_id, ex.public_key, code, detail, NOW)), Decline)


def test_every_peer_declining_fails_the_job_at_the_window_end_with_the_reasons_counted():
    job = new_job(image="python:3.9-slim")
    undecided = 3
    for ex in EXECUTORS[:3]:
        undecided -= 1
        assert feed(job, "decline", decline(ex, job), undecided, NOW + 5) == []  # bidding is still open
    assert job.state == "bidding"
    actions = tick(job, 0)
    assert job.state == "failed"
    assert job.reason == "no bids: 3 nodes lack image python:3.9-slim"
    assert isinstance(actions[-1], Finished) and actions[-1].reason == job.reason
    checked = verify_certificate(next(a for a in actions if isinstance(a, PublishCertificate)).certificate)
    assert checked.certificate.reason == job.reason
    assert set(checked.declines) == {e.public_key for e in EXECUTORS[:3]}
    assert {d.code for d in checked.declines.values()} == {"image_missing"}


def test_an_undecided_peer_keeps_the_job_waiting_and_unknown_never_fails_early():
    job = new_job()
    feed(job, "decline", decline(EXECUTORS[0], job), 2)
    assert tick(job, 2) == []
    assert job.state == "running" and not job.done  # two peers may still bid: a quorum of 2
    assert tick(job, 1, NOW + job.timing.bid_window_ms + 1)[-1].reason == (
        "no bids: 1 node lacks image alpine:latest, 1 node had not answered")
    other = new_job(name="other")
    feed(other, "decline", decline(EXECUTORS[0], other), None)
    assert tick(other, None) == []
    assert not other.done  # the node could not tell: the timeouts decide


def test_too_few_bidders_for_the_quorum_fail_as_soon_as_the_rest_declined():
    job = new_job(replicas=3, quorum=3)
    feed(job, "bid", bid(EXECUTORS[0], job), 2)
    feed(job, "bid", bid(EXECUTORS[1], job), 1)
    feed(job, "decline", decline(EXECUTORS[2], job, "busy", "all job slots busy"), 0)
    actions = tick(job, 0)
    assert job.state == "failed"
    assert job.reason == "only 2 nodes bid, the quorum needs 3: 1 node is busy"
    assert not any(isinstance(a, SendAward) for a in actions)  # awards that cannot verify are not sent
    checked = verify_certificate(job.certificate)
    assert set(checked.bids) == {EXECUTORS[0].public_key, EXECUTORS[1].public_key}


def test_enough_bids_run_as_before_with_declines_alongside():
    job = new_job(replicas=2, quorum=2)
    feed(job, "bid", bid(EXECUTORS[0], job), 2)
    feed(job, "bid", bid(EXECUTORS[1], job), 1)
    feed(job, "decline", decline(EXECUTORS[2], job), 0)
    actions = tick(job, 0)
    assert [type(a) for a in actions] == [SendAward, SendAward]
    assert job.state == "running"


def test_a_peer_declines_once_and_not_after_bidding():
    job = new_job()
    job.receive_bid(bid(EXECUTORS[0], job), NOW)
    with pytest.raises(RemoteProtocolError) as e:
        job.receive_decline(decline(EXECUTORS[0], job), NOW)
    assert e.value.reason == "duplicate"
    job.receive_decline(decline(EXECUTORS[1], job), NOW)
    with pytest.raises(RemoteProtocolError):
        job.receive_decline(decline(EXECUTORS[1], job), NOW)


def test_replay_rebuilds_the_same_failure():
    job = new_job()
    inputs = [("start", job.signed_spec, {}, NOW)]
    for i, ex in enumerate(EXECUTORS[:2]):
        d = decline(ex, job, "not_enough_memory", "needs 512 MiB, offers 256")
        feed(job, "decline", d, 1 - i, NOW + i)
        inputs.append(("decline", d.raw, {"undecided": 1 - i}, NOW + i))
    end = NOW + job.timing.bid_window_ms
    tick(job, 0, end)
    inputs.append(("tick", b"", {"undecided": 0}, end))
    again = replay(SUBMITTER, job.timing, inputs)
    assert (again.state, again.reason, again.certificate) == (job.state, job.reason, job.certificate)
    assert again.reason == "no bids: 2 nodes have less memory than the job's 256 MiB"


def test_a_certificate_with_a_forged_or_foreign_decline_is_refused():
    job = new_job()
    feed(job, "decline", decline(EXECUTORS[0], job), 0)
    tick(job, 0)
    cert = verify(job.certificate, Certificate).msg
    other = new_job(name="other")
    foreign = sign(EXECUTORS[1], Decline(other.job_id, EXECUTORS[1].public_key, "busy", "", NOW))
    # a decline "by" one executor signed by another: verify() refuses it as wrong_signer
    forged = sign(EXECUTORS[2], Decline(job.job_id, EXECUTORS[1].public_key, "busy", "", NOW))
    for bad, reason in ((foreign, "malformed"), (forged, "wrong_signer"), (cert.declines[0], "malformed")):
        tampered = Certificate(cert.job_id, cert.status, cert.result_hash, cert.signed_spec, cert.awards,
                               cert.reveals, cert.created_ms, cert.reason, cert.bids, cert.declines + (bad,))
        with pytest.raises(RemoteProtocolError) as e:
            verify_certificate(sign(SUBMITTER, tampered))
        assert e.value.reason == reason


def test_a_decline_is_checked_like_every_message():
    job = new_job()
    with pytest.raises(RemoteProtocolError) as e:
        verify(sign(EXECUTORS[0], Decline(job.job_id, EXECUTORS[0].public_key, "tired", "", NOW)), Decline)
    assert e.value.reason == "malformed"
    with pytest.raises(RemoteProtocolError):  # a terminal escape in the detail
        verify(sign(EXECUTORS[0], Decline(job.job_id, EXECUTORS[0].public_key, "busy", "\x1b[2J", NOW)), Decline)


def test_reasons_are_worded_once_with_plurals():
    spec = make_spec(image="python:3.9-slim")
    assert summary(spec, ["busy", "image_missing", "image_missing"]) == "2 nodes lack image python:3.9-slim, 1 node is busy"
    assert failure_reason(spec, [], 0) == "no bids: no node offered to run this job"
    assert failure_reason(spec, ["no_gpu"], 1) == "only 1 node bid, the quorum needs 2: 1 node has no GPU"
    assert failure_reason(spec, [], 0, undecided=2) == "no bids: 2 nodes had not answered"
    assert len(failure_reason(make_spec(image="x" * 400), ["image_missing"], 0)) <= 200


def test_a_decline_from_the_peer_bidding_waits_for_ends_the_wait_at_once():
    """Bidding is held open for a better-reputed peer that has not bid (bids_wait); when that peer
    declines, nobody is left to wait for: bidding closes there and then, not 3 s later."""
    job = new_job()
    apply_input(job, "bid", bid(EXECUTORS[0], job), {"unbid_best": 10, "undecided": 1}, NOW)
    end = NOW + job.timing.bid_window_ms
    assert apply_input(job, "tick", b"", {"unbid_best": 10, "undecided": 1}, end) == []
    assert job.awaiting_reputation and job.state == "bidding"
    actions = apply_input(job, "decline", decline(EXECUTORS[1], job), {"unbid_best": 0, "undecided": 0}, end + 5)
    assert job.state == "failed", job.history  # and with one bid for a quorum of 2, it cannot verify
    assert job.reason == "only 1 node bid, the quorum needs 2: 1 node lacks image alpine:latest"
    assert isinstance(actions[-1], Finished)
