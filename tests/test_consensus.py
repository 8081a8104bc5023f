"""Unit and property tests of the pure protocol core (no network, no clock)."""

from __future__ import annotations


import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.codec import Identity, decode_canonical, encode
from distributeai.consensus.errors import JobFileError, RemoteProtocolError
from distributeai.consensus.jobfile import parse_job
from distributeai.consensus.messages import (
    MESSAGE_TYPES, Announce, Award, Bid, Certificate, Commit, JobSpec, Reveal, RevealRequest, job_id_of, sign,
    verify,
)
from distributeai.consensus.results import result_hash, seal
from distributeai.consensus.submitter import (
    Finished, PublishCertificate, RequestReveal, SendAward, SubmitterJob,
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
    for t in (JobSpec, Announce, Bid, Award, Commit, RevealRequest, Reveal, Certificate):
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
            Award(jid, ex, 0, NOW, spec_raw), Commit(jid, ex, b"s" * 32), RevealRequest(jid, ex),
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


def drive(outputs: list[bytes], quorum: int = 2):
    spec = make_spec(replicas=len(outputs), quorum=quorum)
    spec_raw = sign(SUBMITTER, spec)
    job = SubmitterJob(SUBMITTER, spec_raw, spec, started_ms=NOW)
    actions = []
    for ex in EXECUTORS[: len(outputs)]:
        bid = sign(ex, Bid(job.job_id, ex.public_key, 1, 1000, 256, ("process",), NOW))
        actions += job.receive_bid(verify(bid, Bid), NOW)
    assert [type(a) for a in actions] == [SendAward] * len(outputs)
    assert job.state == "executing"
    reveals = {}
    actions = []
    for ex, out in zip(EXECUTORS, outputs):
        commit, reveals[ex.public_key] = run_executor(ex, job.job_id, out)
        actions += job.receive_commit(verify(commit, Commit), NOW + 1)
    assert job.state == "revealing"
    assert {a.executor for a in actions if isinstance(a, RequestReveal)} == set(reveals)
    actions = []
    for e, r in reveals.items():
        actions += job.receive_reveal(verify(r, Reveal), NOW + 2)
    return job, actions


def test_two_of_three_verifies_and_certificate_checks_out():
    job, actions = drive([b"A\n", b"A\n", b"B\n"])
    assert job.state == "verified"
    cert = next(a for a in actions if isinstance(a, PublishCertificate)).certificate
    checked = verify_certificate(cert)
    assert checked.tally.outcome == "verified"
    assert len(checked.tally.agreeing) == 2 and len(checked.tally.dissenting) == 1
    assert checked.reveals[checked.tally.agreeing[0]].stdout == b"A\n"
    assert isinstance(actions[-1], Finished) and actions[-1].status == "verified"


def test_no_agreement_fails():
    job, actions = drive([b"A", b"B", b"C"])
    assert job.state == "failed" and job.reason == "no_quorum"
    verify_certificate(next(a for a in actions if isinstance(a, PublishCertificate)).certificate)


def test_certificate_with_forged_verdict_is_rejected():
    job, actions = drive([b"A", b"B", b"C"])
    cert = verify(job.certificate, Certificate).msg
    forged = Certificate(cert.job_id, "verified", verify(cert.reveals[0], Reveal).msg.result_hash,
                         cert.signed_spec, cert.awards, cert.reveals, cert.created_ms)
    with pytest.raises(RemoteProtocolError) as e:
        verify_certificate(sign(SUBMITTER, forged))
    assert e.value.reason == "bad_verdict"
    # dropping a dissenting reveal's award makes the reveal unawarded
    forged2 = Certificate(cert.job_id, cert.status, cert.result_hash, cert.signed_spec,
                          cert.awards[1:], cert.reveals, cert.created_ms)
    with pytest.raises(RemoteProtocolError):
        verify_certificate(sign(SUBMITTER, forged2))
    # signed by someone other than the submitter
    with pytest.raises(RemoteProtocolError) as e:
        verify_certificate(sign(EXECUTORS[0], cert))
    assert e.value.reason == "wrong_signer"


def test_reveal_contradicting_its_seal_is_rejected_and_changes_nothing():
    spec = make_spec()
    spec_raw = sign(SUBMITTER, spec)
    job = SubmitterJob(SUBMITTER, spec_raw, spec, started_ms=NOW)
    for ex in EXECUTORS[:3]:
        job.receive_bid(verify(sign(ex, Bid(job.job_id, ex.public_key, 1, 1000, 256, ("process",), NOW)), Bid), NOW)
    ex = EXECUTORS[0]
    commit, _ = run_executor(ex, job.job_id, b"honest")
    job.receive_commit(verify(commit, Commit), NOW)
    for other in EXECUTORS[1:3]:
        job.receive_commit(verify(run_executor(other, job.job_id, b"honest")[0], Commit), NOW)
    _, lying = run_executor(ex, job.job_id, b"changed my mind")
    with pytest.raises(RemoteProtocolError) as e:
        job.receive_reveal(verify(lying, Reveal), NOW)
    assert e.value.reason == "seal_mismatch"
    assert job.reveals == {}


def test_commit_from_unawarded_peer_and_duplicate_bids_are_rejected():
    spec = make_spec()
    spec_raw = sign(SUBMITTER, spec)
    job = SubmitterJob(SUBMITTER, spec_raw, spec, started_ms=NOW)
    bid = verify(sign(EXECUTORS[0], Bid(job.job_id, EXECUTORS[0].public_key, 1, 1000, 256, ("process",), NOW)), Bid)
    job.receive_bid(bid, NOW)
    with pytest.raises(RemoteProtocolError) as e:
        job.receive_bid(bid, NOW)
    assert e.value.reason == "duplicate"
    assert len(job.awards) == 1
    commit, _ = run_executor(EXECUTORS[3], job.job_id, b"x")
    with pytest.raises(RemoteProtocolError) as e:
        job.receive_commit(verify(commit, Commit), NOW)
    assert e.value.reason == "not_awarded"


def test_deadlines_advance_the_job():
    spec = make_spec()
    spec_raw = sign(SUBMITTER, spec)
    job = SubmitterJob(SUBMITTER, spec_raw, spec, started_ms=NOW)
    assert job.tick(NOW + 1) == []
    [f] = job.tick(job.phase_deadline_ms)
    assert f == Finished("failed", "too_few_bids", None)
    # two bidders, the third never comes: after the bid window the job runs with two
    job = SubmitterJob(SUBMITTER, spec_raw, spec, started_ms=NOW)
    for ex in EXECUTORS[:2]:
        job.receive_bid(verify(sign(ex, Bid(job.job_id, ex.public_key, 1, 1000, 256, ("process",), NOW)), Bid), NOW)
    assert job.tick(job.phase_deadline_ms) == [] and job.state == "executing"
    [f] = job.tick(job.phase_deadline_ms)
    assert f.reason == "too_few_commits" and job.state == "failed"
    [f] = SubmitterJob(SUBMITTER, spec_raw, spec, started_ms=NOW).tick(NOW + 10**9)
    assert f.reason == "too_few_bids"


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
