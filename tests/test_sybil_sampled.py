"""Sybil resistance under sampled bidding, in the pure core (issue 17): fresh identities that fall
inside a job's sample do not take the slots that established peers outside it could have had.

The network is the one of tests/test_sybil.py: 3 established nodes (earned reputation) and 20
fresh identities (reputation 0, each bidding at price 0 to outrank them), all connected to the
submitter; the submitter samples as with `--bid-sample-factor 1` (about 3 of the 24 eligible). Each
job's nonce is chosen (a deterministic search) so that the established nodes are certainly
outside the first share and at least 3 fresh ones inside it: the case that lost a slot to a
stranger on CI by chance is here every time.

`SubmitterView` stands in for the adapter (node/submitting.py `apply`): it adds to each input
what the node would, from its view of the network (`unbid_best`, `outside_best`), so the job is
driven through `apply_input` as the live node drives it, with time passed in. Honest nodes bid
only once eligible, fresh ones first (they answer fastest), established ones after."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from distributeai.consensus.codec import Identity
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.ledger import REPUTATION_START
from distributeai.consensus.messages import job_id_of, sign
from distributeai.consensus.sampling import SHARE_ALL, eligible, initial_share
from distributeai.consensus.submitter import SendAward, SubmitterJob, WidenBids, apply_input

from .protocol_fixtures import NOW, SUBMITTER, bid, ident, make_spec

REPLICAS = 3
ESTABLISHED = [ident(i) for i in (200, 201, 202)]
FRESH = [ident(i) for i in range(210, 230)]
EARNED = {p.public_key: r for p, r in zip(ESTABLISHED, (10, 15, 20))}
SHARE = initial_share(1 + len(ESTABLISHED) + len(FRESH), REPLICAS, 1)


def first_eligible_at(job_id: bytes, key: bytes) -> int:
    """How many widenings of SHARE it takes before `key` may bid on the job (0: at once)."""
    share, widenings = SHARE, 0
    while not eligible(job_id, key, share):
        share, widenings = min(SHARE_ALL, share * 2), widenings + 1
    return widenings


def sampled_job(when: dict[bytes, int]) -> SubmitterJob:
    """A job whose nonce makes each key of `when` eligible first after exactly that many
    widenings, and at least REPLICAS fresh identities eligible from the start."""
    for n in range(100_000):
        spec = make_spec(nonce=n.to_bytes(16, "big"), replicas=REPLICAS, quorum=2)
        signed = sign(SUBMITTER, spec)
        job_id = job_id_of(signed)
        if (all(first_eligible_at(job_id, key) == w for key, w in when.items())
                and sum(eligible(job_id, p.public_key, SHARE) for p in FRESH) >= REPLICAS):
            return SubmitterJob(SUBMITTER, signed, spec, started_ms=NOW, share=SHARE)
    raise AssertionError("no nonce found")


@dataclass
class SubmitterView:
    """The submitter node's view: who is connected and each one's reputation (0 unless earned).
    `apply` adds to an input what node/submitting.py `apply` adds, by the same rules; `undecided`
    stays unknown (None), as a node with more than TARGET_PEERS (8) connections reports it."""

    peers: list[bytes]
    reputation: dict[bytes, int]
    me: bytes = SUBMITTER.public_key

    def best(self, job: SubmitterJob, sender: bytes, outside: bool) -> int:
        keys = self.peers + [self.me] if outside else self.peers
        return max([REPUTATION_START] + [self.reputation.get(k, REPUTATION_START) for k in keys
                    if k != sender and k not in job.bids and k not in job.declines
                    and eligible(job.job_id, k, job.share) != outside])

    def apply(self, job: SubmitterJob, kind: str, payload, now_ms: int) -> list:
        sender = payload.signer if kind == "bid" else b""
        meta = {"reputation": self.reputation.get(sender, REPUTATION_START)} if kind == "bid" else {}
        if job.state == "bidding":
            meta["unbid_best"] = self.best(job, sender, outside=False)
            if job.share < SHARE_ALL:
                meta["outside_best"] = self.best(job, b"", outside=True)
        return apply_input(job, kind, payload, meta, now_ms)


def run_bidding(job: SubmitterJob, view: SubmitterView, bidders: list[Identity]) -> list:
    """Every bidder eligible at the job's share bids, in the order given, those with no earned
    reputation at price 0 (to outrank the rest on price); then the window runs out (a tick at
    the job's deadline); again, until bidding has closed. All the job's actions."""
    actions, now = [], NOW
    for _ in range(10):
        for p in bidders:
            key = p.public_key
            if job.state == "bidding" and key not in job.bids and eligible(job.job_id, key, job.share):
                now += 1
                actions += view.apply(job, "bid", bid(p, job, price=1 if key in view.reputation else 0), now)
        if job.state != "bidding":
            return actions
        now = job.next_deadline_ms()
        actions += view.apply(job, "tick", b"", now)
        if job.state != "bidding":
            return actions
    raise AssertionError(f"bidding never closed: {job.history}")


@pytest.mark.parametrize("when", [(1, 1, 1), (2, 2, 2), (0, 1, 2)])
def test_fresh_identities_inside_the_sample_do_not_take_the_slots_of_established_peers_outside_it(when):
    """`when`: after how many widenings each established node may bid (0: at once)."""
    job = sampled_job({p.public_key: w for p, w in zip(ESTABLISHED, when)})
    assert SHARE == SHARE_ALL // 8  # sampled: about 3 of the 24 (the submitter counted) at first
    late = next(p for p, w in zip(ESTABLISHED, when) if w > 0)
    with pytest.raises(RemoteProtocolError) as refused:  # it does not try (node/agent.py), and may not
        job.receive_bid(bid(late, job), NOW)
    assert refused.value.reason == "not_eligible" and not job.bids
    view = SubmitterView([p.public_key for p in ESTABLISHED + FRESH], EARNED)
    actions = run_bidding(job, view, FRESH + ESTABLISHED)
    # Enough fresh bids were in from the start, yet the job widened until every established peer
    # could bid, and they took every slot.
    assert sum(p.public_key in job.bids for p in FRESH) >= REPLICAS  # the strangers did bid, and lost
    assert {a.executor for a in actions if isinstance(a, SendAward)} == set(EARNED) == set(job.awards)
    widenings = max(when)
    assert [a for a in actions if isinstance(a, WidenBids)] == [WidenBids(SHARE << w) for w in range(1, widenings + 1)]
    assert [h[1] for h in job.history].count("bids_widened") == widenings

