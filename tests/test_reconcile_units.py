"""Range-based set reconciliation, the pure core (consensus/reconcile.py): two sets converge in a
few rounds at a cost that follows their difference, not their size; every decoder rejects what
is malformed with a RemoteProtocolError; a session's rounds are bounded; a pulled certificate is
checked as a gossiped one and held to what was asked."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributeai.consensus.codec import encode
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.reconcile import (
    FP_LEN, GET_MAX, ID_LIMIT, MAX_RANGES, MAX_ROUNDS, SPLIT, KeySet, Session, answer, check_pulled, decode_answer,
    decode_get, decode_got, decode_request, encode_answer, encode_get, encode_request, get_answer, key_bytes,
)
from distributeai.consensus.certificate import verify_certificate

from .protocol_fixtures import NOW, SUBMITTER, certified_job


def keys(rng: random.Random, n: int) -> list[bytes]:
    return [key_bytes(NOW + rng.randrange(10**9), rng.randbytes(32)) for _ in range(n)]


def keyset(items) -> KeySet:
    return KeySet.of(items)


def sync(mine: KeySet, theirs: KeySet) -> tuple[Session, int]:
    """Run a session of `mine` against a peer holding `theirs`; the session and the bytes moved."""
    session = Session(mine)
    request, moved = session.start(), 0
    while request is not None:
        reply = answer(theirs, request)
        moved += len(request) + len(reply)
        request = session.on_answer(reply)
    return session, moved


def test_equal_sets_agree_in_one_round():
    rng = random.Random(1)
    common = keys(rng, 3000)
    session, moved = sync(keyset(common), keyset(reversed(common)))
    assert session.missing == [] and session.rounds == 1 and moved < 200


def test_a_small_difference_converges_in_few_rounds_at_a_cost_of_the_difference():
    rng = random.Random(2)
    costs = {}
    for n in (2_000, 50_000):
        common = keys(rng, n)
        theirs_only = keys(rng, 5)
        mine_only = keys(rng, 3)
        session, moved = sync(keyset(common + mine_only), keyset(common + theirs_only))
        assert sorted(session.missing) == sorted(theirs_only)
        assert not session.cut_short
        assert session.rounds <= 5
        costs[n] = moved
    # 25 times the history, the same difference: the bytes grow with the depth (log n), not n.
    assert costs[50_000] < 3 * costs[2_000], costs
    assert costs[50_000] < 60_000, costs


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(0, 400), max_size=300), st.sets(st.integers(0, 400), max_size=300))
def test_the_session_finds_exactly_what_the_peer_has_and_mine_lacks(mine, theirs):
    as_key = {i: key_bytes(i // 3, i.to_bytes(32, "big")) for i in mine | theirs}
    session, _ = sync(keyset(as_key[i] for i in mine), keyset(as_key[i] for i in theirs))
    assert sorted(session.missing) == sorted(as_key[i] for i in theirs - mine)


def test_an_empty_node_learns_a_whole_set_and_a_full_one_nothing_from_an_empty_peer():
    rng = random.Random(3)
    full = keys(rng, 700)
    session, _ = sync(KeySet(), keyset(full))
    assert sorted(session.missing) == sorted(full)
    session, _ = sync(keyset(full), KeySet())
    assert session.missing == []


def test_late_keys_keep_the_fingerprints_right():
    rng = random.Random(4)
    items = keys(rng, 500)
    grown = keyset(sorted(items)[:250])
    grown.fingerprint(b"", b"")  # prefix sums computed, then made stale by earlier keys
    for k in items:
        grown.add(k)
    one_by_one = KeySet()
    for k in reversed(items):
        one_by_one.add(k)
    assert grown.fingerprint(b"", b"") == keyset(items).fingerprint(b"", b"") == one_by_one.fingerprint(b"", b"")
    assert grown.keys == one_by_one.keys == sorted(items)


def test_a_peer_that_splits_for_ever_is_cut_short():
    """An answerer that always splits, each part claiming items this node lacks: the session
    ends after MAX_ROUNDS answers, bounded, and says so."""
    mine = keyset(keys(random.Random(5), 100))
    session = Session(mine)
    request = session.start()
    while request is not None:
        ranges = decode_request(request)
        items = []
        for lo, hi, _, _ in ranges:
            a, b = int.from_bytes(lo or bytes(40), "big"), int.from_bytes(hi, "big") if hi else 1 << 320
            mid = ((a + b) // 2).to_bytes(40, "big")  # 320 halvings are possible: far more than the bound
            items.append((SPLIT, [(mid, 50, b"\1" * FP_LEN), (hi, 50, b"\2" * FP_LEN)]))
        request = session.on_answer(encode_answer(items))
        assert session.rounds <= MAX_ROUNDS
    assert session.cut_short and session.rounds == MAX_ROUNDS


RANGE = [b"", b"", 0, b"\0" * FP_LEN]
K1, K2 = key_bytes(1, b"\1" * 32), key_bytes(2, b"\2" * 32)


@pytest.mark.parametrize("body", [
    ["rq", []],  # no range
    ["rq", [[b"", b"", 0]]],  # short range
    ["rq", [[K2, K1, 0, b"\0" * FP_LEN]]],  # lo after hi
    ["rq", [[b"", b"", 0, b"\0" * FP_LEN], [K1, K2, 0, b"\0" * FP_LEN]]],  # after the end
    ["rq", [[b"x", b"", 0, b"\0" * FP_LEN]]],  # a bound that is no key
    ["rq", [[b"", b"", -1, b"\0" * FP_LEN]]],
    ["rq", [[b"", b"", 0, b"\0" * 15]]],
    ["rq", [RANGE] * (MAX_RANGES + 1)],
    ["ra", [RANGE]],  # another message's tag
    ["rq"],
])
def test_malformed_requests_are_rejected(body):
    with pytest.raises(RemoteProtocolError):
        decode_request(encode(body))


@pytest.mark.parametrize("items", [
    [],  # no answer for the range
    [[0], [0]],  # one too many
    [[3]],  # no such mode
    [[0, []]],
    [[1, [K2, K1]]],  # keys out of order
    [[1, [K1, K1]]],
    [[1, [b"short"]]],
    [[1, [K1] * (ID_LIMIT + 1)]],
    [[2, [[b"", 0, b"\0" * FP_LEN]]]],  # one part
    [[2, [[K2, 0, b"\0" * FP_LEN], [K1, 0, b"\0" * FP_LEN]]]],  # parts out of order
    [[2, [[K1, 0, b"\0" * FP_LEN], [K2, 0, b"\0" * FP_LEN]]]],  # does not end at the range's end
    [[2, [[b"", 0, b"\0" * FP_LEN], [b"", 0, b"\0" * FP_LEN]]]],  # a part after the end
    [[2, [[K1, 0, b"\0" * FP_LEN], [b"", 0, b"\0" * FP_LEN], [b"", 0, b"\0" * FP_LEN]]]],
])
def test_malformed_answers_are_rejected(items):
    ranges = decode_request(encode_request([tuple(RANGE)]))
    with pytest.raises(RemoteProtocolError):
        decode_answer(encode(["ra", items]), ranges)


def test_keys_outside_the_asked_range_are_rejected():
    ranges = [(K1, K2, 0, b"\0" * FP_LEN)]
    with pytest.raises(RemoteProtocolError):
        decode_answer(encode(["ra", [[1, [K2]]]]), ranges)
    assert decode_answer(encode(["ra", [[1, [K1]]]]), ranges) == [(1, [K1])]


def test_garbage_never_raises_anything_else():
    rng = random.Random(6)
    ranges = [tuple(RANGE)]
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(0, 80))
        for decode in (decode_request, lambda d: decode_answer(d, ranges), decode_get, lambda d: decode_got(d, 4)):
            try:
                decode(data)
            except RemoteProtocolError:
                pass


def test_gets_are_bounded_and_answers_fit_their_cap():
    ids = [bytes([i]) * 32 for i in range(GET_MAX)]
    assert decode_get(encode_get(ids)) == ids
    for bad in ([], ids + [b"\xff" * 32], [ids[0], ids[0]], [b"short"]):
        with pytest.raises(RemoteProtocolError):
            decode_get(encode(["gq", bad]))
    held = {i: bytes(400) for i in ids[:10]}
    assert len(get_answer(held.get, ids, cap=1000)) == 2  # as many as fit, in order
    assert len(get_answer(held.get, ids, cap=10)) == 1  # always the first
    with pytest.raises(RemoteProtocolError):
        decode_got(encode(["ga", [b"x", b"y"]]), 1)  # more than asked


def test_a_pulled_certificate_is_checked_as_gossip_and_held_to_its_key():
    cert = certified_job([b"A", b"A", b"B"]).certificate
    checked = verify_certificate(cert)
    c = checked.certificate
    key = key_bytes(c.created_ms, c.job_id)
    assert check_pulled(cert, {c.job_id: key}, NOW, 0).certificate.job_id == c.job_id
    with pytest.raises(RemoteProtocolError) as exc:
        check_pulled(cert, {c.job_id: key_bytes(c.created_ms + 1, c.job_id)}, NOW, 0)
    assert exc.value.reason == "reconcile_unasked"
    with pytest.raises(RemoteProtocolError):
        check_pulled(cert, {}, NOW, 0)
    forged = bytearray(cert)
    forged[-1] ^= 1  # the signature
    with pytest.raises(RemoteProtocolError):
        check_pulled(bytes(forged), {c.job_id: key}, NOW, 0)
    announce = certified_job([b"A", b"A"]).signed_spec  # a spec, not a certificate
    with pytest.raises(RemoteProtocolError):
        check_pulled(announce, {c.job_id: key}, NOW, 0)
    assert SUBMITTER.public_key == checked.spec.submitter
