"""Trust from certificates (consensus/trust.py, through consensus/ledger.py): consecutive-valid
counts per (executor, runtime class), folded from verified certificates in the ledger's order;
single runs change no count and no reputation but pay; a certificate's claimed count is judged
against the node's own (`Ledger.untrusted`).

Pure logic on real, hand-signed certificates checked by `verify_certificate`, as every node
checks them."""

from __future__ import annotations

import copy
import hashlib
import random

from distributeai.bootstrap.service import Stats
from distributeai.consensus.adaptive import NO_PLATFORM, Evidence, mode_of, mode_quorum, runtime_class, sign_draw, spot_check
from distributeai.consensus.certificate import CheckedCertificate, verify_certificate
from distributeai.consensus.codec import Identity
from distributeai.consensus.ledger import AGREE_REWARD, DISSENT_PENALTY, UNTRUSTED, Ledger, certificate_key
from distributeai.consensus.messages import Award, Bid, Certificate, Commit, Reveal, job_id_of, sign
from distributeai.consensus.results import result_hash, seal
from distributeai.consensus.trust import untrusted_reason
from distributeai.consensus.verdict import job_tally, nondeterministic
from distributeai.p2p.identity import peer_id_from_public_key

from .protocol_fixtures import NOW, SUBMITTER, ident, make_spec

A, B, C, D = (ident(i) for i in (2, 3, 4, 5))
X86 = ("x86_64", "GenuineIntel", "")
ARM = ("aarch64", "", "")
PRICE = 3


def certify(runs: list[tuple[Identity, bytes]], t: int, salt: int, *, platform=X86, platforms=None,
            carried=True, claim: int | None = None, check: bool | None = None, **spec_fields) -> CheckedCertificate:
    """A signed certificate of a job at key time `t`, run by `runs` (executor, stdout) in slot
    order, checked by `verify_certificate`. Its status is what the reveals support. With `claim`,
    an adaptive job whose first executor is trusted with that CV: the spec's nonce is chosen so
    that the draw's spot check comes out as `check` (by default: a check iff two ran)."""
    platforms = platforms or {}
    want = len(runs) == 2 if check is None else check
    fields = dict(price=PRICE, replicas=len(runs), quorum=min(2, len(runs)))
    if claim is not None:
        fields.update(verification="adaptive", trust_threshold=min(claim, 3), spot_check_floor_ppm=0)
    fields.update(spec_fields)
    for attempt in range(1000):
        nonce = hashlib.sha256(b"%d/%d" % (salt, attempt)).digest()[:16]
        spec = make_spec(nonce=nonce, **fields)
        signed_spec = sign(SUBMITTER, spec)
        job_id = job_id_of(signed_spec)
        hashes = {ex.public_key: result_hash(0, False, out, False) for ex, out in runs}
        evidence, drawn = None, None
        if claim is not None:
            first = runs[0][0]
            commit = sign(first, Commit(job_id, first.public_key, seal(first.public_key, job_id, hashes[first.public_key])))
            draw = sign_draw(SUBMITTER, job_id, seal(first.public_key, job_id, hashes[first.public_key]))
            drawn = spot_check(draw, claim, spec.spot_check_floor_ppm)
            if drawn != want:
                continue
            evidence = Evidence(claim, draw, commit)
        break
    else:
        raise AssertionError("no nonce gives the wanted draw")
    awards = tuple(sign(SUBMITTER, Award(job_id, ex.public_key, slot, NOW + 60_000)) for slot, (ex, _) in enumerate(runs))
    reveals = {ex.public_key: Reveal(job_id, ex.public_key, hashes[ex.public_key], 0, out, False, False) for ex, out in runs}
    bids = tuple(sign(ex, Bid(job_id, ex.public_key, PRICE, 1000, 256, ("docker",), NOW, platform=platforms.get(ex, platform)))
                 for ex, _ in runs) if carried else ()
    mode = mode_of(drawn, runs[0][0].public_key if claim is not None else None, set(reveals))
    verdict = job_tally(spec, reveals, quorum=mode_quorum(mode, spec))
    status = "verified" if verdict.outcome == "verified" else \
        "nondeterministic" if nondeterministic(spec, reveals) else "failed"
    cert = Certificate(job_id, status, verdict.result_hash if status == "verified" else b"", signed_spec, awards,
                       tuple(sign(ex, reveals[ex.public_key]) for ex, _ in runs), t, bids=bids, evidence=evidence)
    return verify_certificate(sign(SUBMITTER, cert))


def cls(platform=X86, **spec_fields) -> bytes:
    return runtime_class(make_spec(**spec_fields), platform)


def folded(certs) -> Ledger:
    ledger = Ledger()
    for c in certs:
        ledger.apply_certificate(c, 0)
    return ledger


def agree(t: int, *who: Identity, salt: int | None = None, **kw) -> CheckedCertificate:
    return certify([(w, b"right") for w in who], t, t if salt is None else salt, **kw)


def test_agreement_counts_and_a_dissent_resets():
    certs = [agree(t, A, B) for t in range(1, 5)]
    certs.append(certify([(A, b"wrong"), (B, b"right"), (C, b"right")], 5, 5))
    certs.append(agree(6, A, C))
    ledger = folded(certs)
    assert ledger.trust(A.public_key, cls()) == 1  # four agreements, a dissent, one more agreement
    assert ledger.trust(B.public_key, cls()) == 5
    assert ledger.trust(C.public_key, cls()) == 2
    assert ledger.trust(D.public_key, cls()) == 0  # never ran anything
    # `before` counts only the certificates with a smaller key (the certificate's own is not).
    assert ledger.trust(A.public_key, cls(), before=certificate_key(certs[4])) == 4
    assert ledger.trust(A.public_key, cls(), before=(5, b"\xff" * 32)) == 0
    assert ledger.trust(A.public_key, cls(), before=(NOW, b"")) == 1
    assert ledger.trust(A.public_key, cls(), before=(0, b"")) == 0
    assert ledger.trust_of(A.public_key) == {cls(): 1}


def test_failed_and_nondeterministic_certificates_count_nothing():
    ledger = folded([agree(1, A, B), agree(2, A, B)])
    before = ledger.trust_of(A.public_key), ledger.trust_of(B.public_key)
    failed = certify([(A, b"right"), (B, b"right"), (C, b"wrong")], 3, 3, quorum=3)  # 2 of the 3 it needs
    nondet = certify([(A, b"one"), (B, b"two"), (C, b"three")], 4, 4)
    assert (failed.certificate.status, nondet.certificate.status) == ("failed", "nondeterministic")
    ledger.apply_certificate(failed, 0)
    ledger.apply_certificate(nondet, 0)
    assert (ledger.trust_of(A.public_key), ledger.trust_of(B.public_key)) == before
    assert ledger.trust_of(C.public_key) == {}


def test_every_arrival_order_gives_the_same_trust_and_view():
    rng = random.Random(18)
    people = [A, B, C, D]
    certs = []
    for j in range(40):
        ran = rng.sample(people, 3)
        outs = [b"right", b"right", b"right" if rng.random() < 0.6 else b"wrong"]
        kw = {"platform": rng.choice([X86, ARM]), "image": rng.choice(["alpine:latest", "python:3.12"])}
        if rng.random() < 0.15:
            outs = [b"x", b"y", b"z"]  # nondeterministic: no event
        certs.append(certify(list(zip(ran, outs)), rng.randrange(1, 30), 100 + j, **kw))
    want = folded(sorted(certs, key=certificate_key))
    every = {(p.public_key, c) for p in people for c in want.trust_of(p.public_key)}
    assert any(want.trust(w, c) >= 3 for w, c in every) and len(every) > 4, "too few events: the test means nothing"
    probes = [(w, c, (t, b"")) for w, c in every for t in (5, 15, 25)]
    for _ in range(12):
        order = certs[:]
        rng.shuffle(order)
        got = Ledger()
        for i, c in enumerate(order):
            got.apply_certificate(c, 0)
            if i % 7 == 0:  # reads between arrivals refold lazily and must not change the end
                got.trust(*probes[i % len(probes)])
        assert got.view_digest() == want.view_digest()
        assert all(got.trust_of(p.public_key) == want.trust_of(p.public_key) for p in people)
        assert [got.trust(*p) for p in probes] == [want.trust(*p) for p in probes]


def test_trust_is_in_the_view_digest():
    """Two sets with the same reputations and credits but different counts differ in digest."""
    one = folded([agree(1, A, B, platform=X86), agree(2, A, B, platform=X86)])
    two = folded([agree(1, A, B, platform=X86), agree(2, A, B, platform=ARM)])
    assert one.view() == two.view()
    assert one.view_digest() != two.view_digest()


def test_classes_are_separate():
    python = dict(image="python:3.12")
    ledger = folded([agree(1, A, B), agree(2, A, B), agree(3, A, B, platform=ARM), agree(4, A, B, **python),
                     agree(5, A, B, carried=False)])
    assert ledger.trust_of(A.public_key) == {cls(): 2, cls(ARM): 1, cls(**python): 1, cls(NO_PLATFORM): 1}
    # A dissent in one class resets that class only.
    ledger.apply_certificate(certify([(A, b"wrong"), (B, b"right"), (C, b"right")], 6, 6, platform=ARM), 0)
    assert ledger.trust(A.public_key, cls(ARM)) == 0 and ledger.trust(A.public_key, cls()) == 2
    # Each executor's class is its own bid's platform.
    mixed = agree(7, C, D, platforms={C: X86, D: ARM})
    ledger.apply_certificate(mixed, 0)
    assert ledger.trust(C.public_key, cls()) == 1 and ledger.trust(D.public_key, cls(ARM)) == 1
    assert ledger.trust(D.public_key, cls()) == 0


def test_a_single_run_moves_no_trust_and_no_reputation_but_pays_once():
    warm = [agree(t, A, B) for t in range(1, 4)]  # A's CV: 3
    ledger = folded(warm)
    rep, cv = ledger.reputation_of(A.public_key), ledger.trust(A.public_key, cls())
    paid_a, paid_s = ledger.balance(A.public_key), ledger.balance(SUBMITTER.public_key)
    single = agree(10, A, claim=3)
    assert single.mode == "single" and single.certificate.status == "verified" and not single.compared
    assert ledger.apply_certificate(single, 0)
    assert ledger.reputation_of(A.public_key) == rep and ledger.trust(A.public_key, cls()) == cv
    assert ledger.balance(A.public_key) == paid_a + PRICE and ledger.balance(SUBMITTER.public_key) == paid_s - PRICE
    assert ledger.untrusted(single) is None  # the claim of 3 holds


def test_a_spot_check_is_an_ordinary_verified_certificate():
    ledger = folded([agree(t, A, B) for t in range(1, 4)])
    rep_a, rep_c = ledger.reputation_of(A.public_key), ledger.reputation_of(C.public_key)
    paid_s = ledger.balance(SUBMITTER.public_key)
    checked = agree(10, A, C, claim=3)
    assert checked.mode == "spot_checked"
    ledger.apply_certificate(checked, 0)
    assert ledger.trust(A.public_key, cls()) == 4 and ledger.trust(C.public_key, cls()) == 1
    assert ledger.reputation_of(A.public_key) == rep_a + AGREE_REWARD
    assert ledger.reputation_of(C.public_key) == rep_c + AGREE_REWARD
    assert ledger.balance(SUBMITTER.public_key) == paid_s - 2 * PRICE
    # A check that caught the trusted executor: escalated to k-of-n, it dissents and resets.
    caught = certify([(A, b"wrong"), (C, b"right"), (D, b"right")], 11, 11, claim=4, check=True)
    assert caught.mode == "replicated" and caught.certificate.status == "verified"
    ledger.apply_certificate(caught, 0)
    assert ledger.trust(A.public_key, cls()) == 0
    assert ledger.reputation_of(A.public_key) == rep_a + AGREE_REWARD + DISSENT_PENALTY


def test_untrusted_flags_a_forged_claim_and_accepts_an_honest_one():
    ledger = folded([agree(t, A, B) for t in range(1, 4)])  # A's CV: 3
    forged = agree(10, A, claim=10, salt=1)
    honest = agree(11, A, claim=3, salt=2)
    assert forged.mode == honest.mode == "single"
    for c in (forged, honest):
        assert ledger.apply_certificate(c, 0)  # both join the set: sets must converge
    assert ledger.untrusted(forged) == untrusted_reason(10, 3)
    assert UNTRUSTED == "untrusted_executor" and "10" in untrusted_reason(10, 3)
    assert ledger.untrusted(honest) is None
    # A certificate without a draw makes no claim to judge.
    assert ledger.untrusted(agree(12, A, B)) is None
    # The count is taken before the certificate's own key: later agreements do not found an
    # earlier claim, earlier ones do.
    late = folded([agree(t, A, B) for t in range(20, 30)] + [forged])
    assert late.untrusted(forged) == untrusted_reason(10, 0)
    early = folded([agree(t, A, B) for t in range(0, 10)] + [forged])
    assert early.untrusted(forged) is None


def test_a_node_missing_older_certificates_judges_again_when_they_arrive():
    warm = [agree(t, A, B) for t in range(1, 4)]
    honest = agree(10, A, claim=3)
    ledger = folded([honest])
    assert ledger.untrusted(honest) == untrusted_reason(3, 0)
    for c in warm:
        ledger.apply_certificate(c, 0)
    assert ledger.untrusted(honest) is None


def test_a_copy_keeps_its_own_counts():
    original = folded([agree(1, A, B)])
    twin = copy.deepcopy(original)
    twin.apply_certificate(agree(2, A, B), 0)
    assert original.trust(A.public_key, cls()) == 1 and twin.trust(A.public_key, cls()) == 2
    assert original.view_digest() == folded([agree(1, A, B)]).view_digest()


def test_the_bootstrap_counts_an_untrusted_certificate_and_keeps_it():
    """bootstrap/service.py counts a certificate as a node does (node/agent.py: the same reason
    through `Agent.reject`): rejected as `untrusted_executor`, yet in the set and certified."""
    stats = Stats(pow_difficulty=0)
    author = peer_id_from_public_key(SUBMITTER.public_key)
    forged, honest = agree(10, A, claim=10, salt=1), agree(11, A, claim=3, salt=2)
    for c in [*(agree(t, A, B) for t in range(1, 4)), forged, honest]:
        stats.observe(c.raw, author, now=NOW / 1000)
    assert stats.rejected == {UNTRUSTED: 1}
    assert stats.certified["verified"] == 5
    assert forged.certificate.job_id in stats.ledger.applied
    assert stats.ledger.view_digest() == folded([forged, honest, *(agree(t, A, B) for t in range(1, 4))]).view_digest()
