"""Unit and property tests of the pure protocol core (no network, no clock): encoding, signed
envelopes, the tally, the ledger, job files. The submitter's state machine: test_submitter_machine.py."""

from __future__ import annotations

import hashlib
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.codec import decode_canonical, encode
from distributeai.consensus.errors import JobFileError, RemoteProtocolError
from distributeai.consensus.jobfile import parse_job
from distributeai.consensus.messages import (
    MESSAGE_TYPES, Announce, Award, Bid, Certificate, Commit, JobSpec, Reveal, RevealRequest, Withdraw, job_id_of,
    sign, verify,
)
from distributeai.consensus.ledger import Ledger
from distributeai.consensus.tally import tally
from distributeai.consensus.validate import check_announce

from .protocol_fixtures import EXECUTORS, NOW, SUBMITTER, drive, make_spec

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


def test_job_file_verification_fields_become_the_specs():
    fields = parse_job({"image": "a", "command": ["x"], "verification": "adaptive", "trust_threshold": 4,
                        "spot_check_floor": 0.1234567, "homogeneous": ["gpu", "arch"],
                        "compare": {"kind": "numeric", "rel": 1e-6, "abs": "1e-9", "files": ["z.json", "out.json"]}})
    assert fields["verification"] == "adaptive" and fields["trust_threshold"] == 4
    assert fields["spot_check_floor_ppm"] == 123457  # millionths, the nearest
    assert fields["homogeneous"] == ("arch", "gpu")
    assert fields["compare"].to_body() == ["numeric", "1e-06", "1e-9", ["out.json", "z.json"]]
    spec = JobSpec(submitter=SUBMITTER.public_key, nonce=bytes(16), created_ms=NOW, **fields)
    assert verify(sign(SUBMITTER, spec), JobSpec).msg == spec  # every node accepts what parse_job accepts
    plain = parse_job({"image": "a", "command": ["x"]})
    assert (plain["verification"], plain["trust_threshold"], plain["spot_check_floor_ppm"]) == ("replicate", 10, 50_000)
    assert plain["compare"].kind == "exact" and plain["homogeneous"] == ()
    assert parse_job({"image": "a", "command": ["x"], "compare": {"kind": "numeric"}})["compare"].rel == "0"


@pytest.mark.parametrize("extra,field", [
    ({"verification": "sometimes"}, "verification"),
    ({"verification": 1}, "verification"),
    ({"trust_threshold": 0}, "trust_threshold"),
    ({"trust_threshold": 2.5}, "trust_threshold"),
    ({"trust_threshold": True}, "trust_threshold"),
    ({"spot_check_floor": 1.5}, "spot_check_floor"),
    ({"spot_check_floor": -0.1}, "spot_check_floor"),
    ({"spot_check_floor": "0.1"}, "spot_check_floor"),
    ({"compare": "numeric"}, "compare"),
    ({"compare": {"kind": "fuzzy"}}, "compare"),
    ({"compare": {"kind": "exact", "rel": 1e-6}}, "compare"),
    ({"compare": {"kind": "numeric", "rel": -1e-6}}, "compare"),
    ({"compare": {"kind": "numeric", "rel": "1e999"}}, "compare"),
    ({"compare": {"kind": "numeric", "abs": "lots"}}, "compare"),
    ({"compare": {"kind": "numeric", "files": ["../etc/passwd"]}}, "compare"),
    ({"compare": {"kind": "numeric", "files": ["a", "a"]}}, "compare"),
    ({"compare": {"kind": "numeric", "tolerance": 1}}, "compare"),
    ({"homogeneous": ["os"]}, "homogeneous"),
    ({"homogeneous": "arch"}, "homogeneous"),
    ({"homogeneous": ["arch", "arch"]}, "homogeneous"),
    ({"homogeneous": ["arch"], "max_total_results": 9, "replicas": 3}, "max_total_results"),
    ({"tasks": [["a"]], "verification": "adaptive"}, "verification"),
    ({"tasks": [["a"]], "compare": {"kind": "numeric"}}, "verification"),
])
def test_bad_verification_fields_name_the_field(extra, field):
    with pytest.raises(JobFileError) as e:
        parse_job({"image": "a", "command": ["x"], **extra})
    assert e.value.field == field, e.value


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
