"""Unit and property tests of the pure protocol core (no network, no clock)."""

from __future__ import annotations


import hashlib
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.codec import Identity, decode_canonical, encode
from distributeai.consensus.errors import JobFileError, RemoteProtocolError
from distributeai.consensus.jobfile import parse_job
from distributeai.consensus.messages import (
    MESSAGE_TYPES, Announce, Award, Bid, Certificate, Commit, JobSpec, Reveal, RevealRequest, Withdraw, job_id_of,
    sign, verify,
)
from distributeai.consensus.results import result_hash, seal
from distributeai.consensus.ledger import Ledger
from distributeai.consensus.submitter import (
    Finished, Penalize, PublishCertificate, RequestReveal, SendAward, SubmitterJob,
)
from distributeai.consensus.tally import tally
from distributeai.consensus.validate import check_announce

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


# --- canonical encoding -----------------------------------------------------------------------

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5),
    max_leaves=30,
)


@given(values)
def test_encode_decode_round_trip(value):
    data = encode(value)
    assert decode_canonical(data, 1 << 20) == value
    assert encode(decode_canonical(data, 1 << 20)) == data


def test_noncanonical_encodings_are_rejected():
    # 1 as a uint32 instead of a positive fixint: same value, other bytes.
    assert decode_canonical(b"\x01", 10) == 1
    with pytest.raises(RemoteProtocolError) as e:
        decode_canonical(b"\xce\x00\x00\x00\x01", 10)
    assert e.value.reason == "noncanonical"
    with pytest.raises(RemoteProtocolError) as e:
        decode_canonical(msgpack.packb({"a": 1}), 100)
    assert e.value.reason == "malformed"
    with pytest.raises(RemoteProtocolError) as e:
        decode_canonical(msgpack.packb(1.5), 100)
    assert e.value.reason == "malformed"
    with pytest.raises(RemoteProtocolError) as e:
        decode_canonical(b"\x01" * 11, 10)
    assert e.value.reason == "oversize"


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_never_crashes(data):
    for t in MESSAGE_TYPES.values():
        try:
            verify(data, t)
        except RemoteProtocolError:
            pass


@given(st.sampled_from(sorted(MESSAGE_TYPES)), st.lists(values, max_size=14))
def test_signed_envelopes_with_arbitrary_bodies_are_rejected_cleanly(kind, body):
    """A correctly signed envelope whose body has the wrong shape or types is a RemoteProtocolError,
    never another exception."""
    raw = SUBMITTER.sign(kind, body)
    try:
        verify(raw, MESSAGE_TYPES[kind])
    except RemoteProtocolError:
        pass


def valid_bodies() -> dict[str, list]:
    spec = make_spec()
    spec_raw = sign(SUBMITTER, spec)
    jid = job_id_of(spec_raw)
    ex = EXECUTORS[0].public_key
    msgs = [spec, Announce(spec_raw, ("/ip4/127.0.0.1/tcp/1",)), Bid(jid, ex, 1, 1000, 256, ("docker",), NOW),
            Award(jid, ex, 0, NOW), Commit(jid, ex, b"s" * 32), Withdraw(jid, ex, "why"), RevealRequest(jid, ex),
            Reveal(jid, ex, b"h" * 32, 0, b"out", False, False),
            Certificate(jid, "failed", b"", spec_raw, (), (), NOW)]
    return {m.kind: m.to_body() for m in msgs}


VALID_BODIES = valid_bodies()


@given(st.sampled_from(sorted(VALID_BODIES)), st.data())
def test_one_field_replaced_by_anything_is_rejected_cleanly(kind, data):
    body = list(VALID_BODIES[kind])
    index = data.draw(st.integers(0, len(body) - 1))
    body[index] = data.draw(values)
    try:
        verify(SUBMITTER.sign(kind, body), MESSAGE_TYPES[kind])
    except RemoteProtocolError:
        pass


spec_strategy = st.builds(
    JobSpec,
    submitter=st.just(SUBMITTER.public_key),
    nonce=st.binary(min_size=16, max_size=16),
    created_ms=st.integers(0, 2**62),
    name=st.text(max_size=30),
    image=st.text(min_size=1, max_size=30),
    command=st.lists(st.text(max_size=20), min_size=1, max_size=5).map(tuple),
    env=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4).map(lambda d: tuple(sorted(d.items()))),
    cpu_millis=st.integers(1, 256_000),
    memory_mb=st.integers(6, 1 << 20),
    timeout_s=st.integers(1, 3600),
    replicas=st.integers(1, 16),
    quorum=st.just(1),
    price=st.integers(0, 2**53),
    max_error_results=st.integers(0, 64),
    max_total_results=st.just(16),
    result_deadline_s=st.integers(1, 3600),
)


@given(spec_strategy)
def test_signed_spec_round_trip(spec):
    raw = sign(SUBMITTER, spec)
    checked = verify(raw, JobSpec)
    assert checked.msg == spec
    assert checked.signer == SUBMITTER.public_key
    assert job_id_of(raw) == job_id_of(sign(SUBMITTER, checked.msg))  # deterministic signatures


@given(st.builds(Reveal, job_id=st.binary(min_size=32, max_size=32), executor=st.just(EXECUTORS[0].public_key),
                 result_hash=st.binary(min_size=32, max_size=32), exit_code=st.integers(-(2**31), 2**31),
                 stdout=st.binary(max_size=200), stdout_truncated=st.booleans(), timed_out=st.booleans()))
def test_reveal_round_trip(reveal):
    assert verify(sign(EXECUTORS[0], reveal), Reveal).msg == reveal


def test_forged_and_tampered_envelopes_are_rejected():
    raw = sign(SUBMITTER, make_spec())
    kind, body, signer, sig = msgpack.unpackb(raw)
    body[3] = "other name"
    with pytest.raises(RemoteProtocolError) as e:
        verify(encode([kind, body, signer, sig]), JobSpec)
    assert e.value.reason == "bad_signature"
    # signed by a key other than the spec's submitter
    with pytest.raises(RemoteProtocolError) as e:
        verify(sign(EXECUTORS[0], make_spec()), JobSpec)
    assert e.value.reason == "wrong_signer"
    with pytest.raises(RemoteProtocolError) as e:
        verify(raw, Bid)
    assert e.value.reason == "wrong_kind"


def test_announce_time_window():
    spec_raw = sign(SUBMITTER, make_spec())
    ann = sign(SUBMITTER, Announce(spec_raw, ("/ip4/127.0.0.1/tcp/1",)))
    assert check_announce(ann, NOW).job_id == job_id_of(spec_raw)
    with pytest.raises(RemoteProtocolError) as e:
        check_announce(ann, NOW + 3600_000)
    assert e.value.reason == "stale"
    with pytest.raises(RemoteProtocolError) as e:
        check_announce(ann, NOW - 3600_000)
    assert e.value.reason == "future_dated"
    foreign = sign(EXECUTORS[0], Announce(spec_raw, ()))
    with pytest.raises(RemoteProtocolError) as e:
        check_announce(foreign, NOW)
    assert e.value.reason == "wrong_signer"


# --- tally ------------------------------------------------------------------------------------

HASHES = [bytes([i]) * 32 for i in range(3)]
votes_strategy = st.dictionaries(st.binary(min_size=1, max_size=2), st.sampled_from(HASHES), max_size=9)


@given(votes_strategy, st.integers(1, 9), st.integers(0, 5))
def test_tally_properties(votes, quorum, outstanding):
    t = tally(votes, quorum, outstanding)
    assert set(t.agreeing) | set(t.dissenting) == set(votes) or t.outcome != "verified"
    if t.outcome == "verified":
        assert len(t.agreeing) >= quorum
        assert all(votes[e] == t.result_hash for e in t.agreeing)
        assert all(votes[e] != t.result_hash for e in t.dissenting)
        # no completion of the outstanding votes can overturn it
        others = [h for h in HASHES if h != t.result_hash]
        for h in others:
            assert sum(1 for v in votes.values() if v == h) + outstanding < len(t.agreeing)
    if outstanding == 0:
        assert t.outcome in ("verified", "no_quorum")
    # order does not matter
    assert tally(dict(reversed(list(votes.items()))), quorum, outstanding) == t


@given(votes_strategy, st.integers(1, 9))
def test_tally_verified_is_stable_under_more_agreement(votes, quorum):
    t = tally(votes, quorum)
    if t.outcome == "verified":
        more = dict(votes)
        more[b"new-voter"] = t.result_hash
        t2 = tally(more, quorum)
        assert t2.outcome == "verified" and t2.result_hash == t.result_hash


def test_tally_examples():
    a, b = HASHES[0], HASHES[1]
    assert tally({b"x": a, b"y": a, b"z": b}, 2).outcome == "verified"
    assert tally({b"x": a, b"y": a, b"z": b}, 2).dissenting == (b"z",)
    assert tally({b"x": a, b"y": b}, 2, outstanding=1).outcome == "pending"
    assert tally({b"x": a, b"y": b, b"z": HASHES[2]}, 2).outcome == "no_quorum"
    assert tally({b"x": a, b"y": a, b"z": b, b"w": b}, 2).outcome == "no_quorum"  # tie
    assert tally({}, 1).outcome == "no_quorum"


# --- the submitter's state machine, driven with no network ------------------------------------

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


# --- reputation and credits -------------------------------------------------------------------

def test_ledger_rewards_agreement_penalizes_dissent_and_pays_agreeing_executors():
    job, _ = drive([b"A", b"A", b"B"])
    checked = verify_certificate(job.certificate)
    ledger = Ledger(genesis=100)
    assert ledger.apply_certificate(checked, NOW)
    assert not ledger.apply_certificate(checked, NOW)  # idempotent
    for e in checked.tally.agreeing:
        assert ledger.reputation_of(e) == 5 and ledger.balance(e) == 101
    for e in checked.tally.dissenting:
        assert ledger.reputation_of(e) == -10 and ledger.balance(e) == 100
    assert ledger.balance(SUBMITTER.public_key) == 100 - len(checked.tally.agreeing)
    assert len(ledger.transfers) == len(checked.tally.agreeing)
    assert ledger.can_pay(make_spec(price=1)) and not ledger.can_pay(make_spec(price=50))


def test_reputation_is_bounded():
    ledger = Ledger()
    for _ in range(50):
        ledger.apply_offence(EXECUTORS[0].public_key)
    assert ledger.reputation_of(EXECUTORS[0].public_key) == -100


# --- job files --------------------------------------------------------------------------------

def test_seed_job_file_is_accepted():
    fields = parse_job({"name": "hash", "docker_image": "alpine:latest",
                        "command": ["sh", "-c", "echo 'Hello' | sha256sum"],
                        "required_cpu": 1, "required_memory": 512})
    assert fields["image"] == "alpine:latest" and fields["cpu_millis"] == 1000 and fields["memory_mb"] == 512
    assert parse_job({"image": "x", "command": ["y"], "required_memory": "1g"})["memory_mb"] == 1024


@pytest.mark.parametrize("doc,field", [
    ({"command": ["x"]}, "image"),
    ({"docker_image": "", "command": ["x"]}, "docker_image"),
    ({"docker_image": "a", "command": "echo hi"}, "command"),
    ({"docker_image": "a", "command": []}, "command"),
    ({"docker_image": "a", "command": ["x"], "required_cpu": "lots"}, "required_cpu"),
    ({"docker_image": "a", "command": ["x"], "required_memory": "huge"}, "required_memory"),
    ({"docker_image": "a", "command": ["x"], "replicas": 2, "quorum": 3}, "quorum"),
    ({"docker_image": "a", "command": ["x"], "colour": "red"}, "colour"),
    ([], "job"),
])
def test_bad_job_files_name_the_field(doc, field):
    with pytest.raises(JobFileError) as e:
        parse_job(doc)
    assert e.value.field == field


def test_a_remembered_signature_check_never_admits_other_bytes():
    from distributeai.consensus import codec

    raw = sign(SUBMITTER, make_spec())
    assert verify(raw, JobSpec).signer == SUBMITTER.public_key
    assert hashlib.sha256(raw).digest() in codec._VERIFIED
    assert verify(raw, JobSpec).signer == SUBMITTER.public_key  # from the memo
    forged = raw[:-1] + bytes([raw[-1] ^ 1])  # the last byte of the signature
    with pytest.raises(RemoteProtocolError) as e:
        verify(forged, JobSpec)
    assert e.value.reason == "bad_signature"
