"""The ledger's fold is order-independent (consensus/ledger.py): the same certificates in any
arrival order give byte-identical views; a late certificate refolds from its place; clamping
follows the certificates' own order; local offences stay out of the shared view.

Fakes for pure logic: the fold reads only a certificate's key, status, tally and price, so most
tests feed stand-ins; one test folds real signed certificates."""

from __future__ import annotations

import random
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.ledger import Ledger

from .protocol_fixtures import EXECUTORS, certified_job

PEOPLE = [bytes([i]) * 32 for i in range(6)]


def fake(created_ms: int, job: int, agreeing=(), dissenting=(), status="verified", payer=5, price=1):
    """A stand-in for a CheckedCertificate: what the fold reads of one."""
    agreeing = tuple(PEOPLE[i] for i in agreeing)
    reveal = SimpleNamespace(fuel_used=0, tasks=())
    return SimpleNamespace(
        certificate=SimpleNamespace(job_id=job.to_bytes(32, "big"), created_ms=created_ms, status=status),
        tally=SimpleNamespace(agreeing=agreeing, dissenting=tuple(PEOPLE[i] for i in dissenting)),
        spec=SimpleNamespace(submitter=PEOPLE[payer], price=price, tasks=(), is_batch=False, price_per_mfuel=0,
                             sandbox="docker", image="alpine:latest"),
        reveals={a: reveal for a in agreeing}, mode="replicated", bids={},
        compared=len(agreeing) + len(dissenting) >= 2)


def many(n: int, seed: int) -> list:
    """n certificates with enough agreement and dissent on few identities to hit both clamps."""
    rng = random.Random(seed)
    out = []
    for j in range(n):
        people = rng.sample(range(5), 3)
        out.append(fake(rng.randrange(1000), j, agreeing=people[:2] if rng.random() < 0.8 else people[:1],
                        dissenting=people[2:], status="verified" if rng.random() < 0.9 else "failed",
                        payer=rng.choice([p for p in range(6) if p not in people])))
    return out


def folded(certs) -> Ledger:
    ledger = Ledger()
    for c in certs:
        ledger.apply_certificate(c, 0)
    return ledger


def test_every_arrival_order_gives_the_same_view():
    certs = many(120, seed=1)
    want = folded(sorted(certs, key=lambda c: (c.certificate.created_ms, c.certificate.job_id)))
    sums: dict[bytes, int] = {}
    for c in certs:
        if c.certificate.status == "verified":
            for who in c.tally.agreeing:
                sums[who] = sums.get(who, 0) + 5
            for who in c.tally.dissenting:
                sums[who] = sums.get(who, 0) - 10
    assert any(want.reputation[w] != v for w, v in sums.items()), "no clamp was reached: the test means nothing"
    rng = random.Random(2)
    for _ in range(30):
        order = certs[:]
        rng.shuffle(order)
        got = folded(order)
        assert got.view_digest() == want.view_digest()
        assert got.view() == want.view() and got.reputation == want.reputation
        assert [t.job_id for t in got.transfers] == [t.job_id for t in want.transfers]


@settings(max_examples=60, deadline=None)
@given(st.permutations(range(25)), st.lists(st.integers(0, 24), max_size=20))
def test_reads_between_arrivals_do_not_change_the_result(order, reads_after):
    """Reading (which folds lazily) at any point, then more late arrivals, ends where sorted does."""
    certs = many(25, seed=3)
    want = folded(sorted(certs, key=lambda c: (c.certificate.created_ms, c.certificate.job_id)))
    ledger = Ledger()
    for step, i in enumerate(order):
        ledger.apply_certificate(certs[i], 0)
        if step in reads_after:
            ledger.reputation_of(PEOPLE[0])
    assert ledger.view_digest() == want.view_digest()


def test_a_late_certificate_refolds_from_its_place():
    who = 0
    ledger = Ledger()
    for t in range(1, 21):  # 20 agreements: +100, at the clamp
        ledger.apply_certificate(fake(t, t, agreeing=[who]), 0)
    ledger.apply_certificate(fake(21, 21, dissenting=[who]), 0)
    assert ledger.reputation_of(PEOPLE[who]) == 90
    # A certificate older than all of them arrives last. In arrival order it would give 95; in
    # the fold's order it comes first, the clamp swallows one of the 21 agreements: 90.
    assert ledger.apply_certificate(fake(0, 0, agreeing=[who]), 0)
    assert ledger.reputation_of(PEOPLE[who]) == 90
    assert ledger.view_digest() == folded([fake(t, t, agreeing=[who]) for t in range(0, 21)]
                                          + [fake(21, 21, dissenting=[who])]).view_digest()


def test_clamping_follows_the_certificates_order():
    dissent_first = folded([fake(1, 1, dissenting=[0])] + [fake(2 + t, 2 + t, agreeing=[0]) for t in range(20)])
    dissent_last = folded([fake(t, t, agreeing=[0]) for t in range(20)] + [fake(30, 30, dissenting=[0])])
    assert dissent_first.reputation_of(PEOPLE[0]) == 90  # -10, then +100
    assert dissent_last.reputation_of(PEOPLE[0]) == 90  # +100 (clamped), then -10
    late_agree = folded([fake(t, t, agreeing=[0]) for t in range(1, 21)] + [fake(30, 30, dissenting=[0]),
                                                                              fake(31, 31, agreeing=[0])])
    assert late_agree.reputation_of(PEOPLE[0]) == 95


def test_a_certificate_is_folded_once_and_credits_are_sums():
    ledger = Ledger(genesis=100)
    c = fake(5, 1, agreeing=[0, 1], dissenting=[2], payer=3, price=4)
    assert ledger.apply_certificate(c, 7) and not ledger.apply_certificate(c, 8)
    assert ledger.balance(PEOPLE[3]) == 92 and ledger.balance(PEOPLE[0]) == 104
    assert [t.at_ms for t in ledger.transfers] == [7, 7]
    assert ledger.certificate_ids() == [(5, (1).to_bytes(32, "big"))]


def test_offences_are_a_local_layer_outside_the_shared_view():
    certs = many(40, seed=4)
    plain, offended = folded(certs), folded(certs)
    for _ in range(3):
        offended.apply_offence(PEOPLE[1])
    assert offended.view_digest() == plain.view_digest()
    base = plain.certificate_reputation(PEOPLE[1])
    assert offended.certificate_reputation(PEOPLE[1]) == base
    assert offended.reputation_of(PEOPLE[1]) == max(-100, base - 30)
    for _ in range(50):  # the local layer is bounded at the scale's bottom: -100 whatever the view
        offended.apply_offence(PEOPLE[1])
    assert offended.offences[PEOPLE[1]] == -100
    assert offended.reputation_of(PEOPLE[1]) == max(-100, base - 100)
    assert offended.reputation[PEOPLE[1]] == offended.reputation_of(PEOPLE[1])


def test_different_sets_give_different_digests():
    certs = many(10, seed=5)
    assert folded(certs).view_digest() != folded(certs[:-1]).view_digest()
    assert folded([]).view_digest() == Ledger().view_digest()
    assert Ledger(genesis=100).view_digest() != folded(certs).view_digest()


def test_real_certificates_fold_the_same_in_either_order():
    a = verify_certificate(certified_job([b"A", b"A", b"B"], nonce=b"\x01" * 16).certificate)
    b = verify_certificate(certified_job([b"A", b"B", b"B"], nonce=b"\x02" * 16).certificate)
    first, second = folded([a, b]), folded([b, a])
    assert first.view_digest() == second.view_digest()
    assert first.reputation_of(EXECUTORS[0].public_key) == second.reputation_of(EXECUTORS[0].public_key)


def test_a_copy_goes_its_own_way():
    import copy

    certs = many(30, seed=6)
    original = folded(certs[:20])
    twin = copy.deepcopy(original)
    assert twin.view_digest() == original.view_digest()
    for c in certs[20:]:
        twin.apply_certificate(c, 0)
    twin.apply_offence(PEOPLE[0])
    assert original.view_digest() == folded(certs[:20]).view_digest() and not original.offences
    assert twin.view_digest() == folded(certs).view_digest()
