"""Sampled bidding in the pure core (issue 17, item 1): who may bid (`consensus.sampling`), the
submitter's check of it, its widening when too few bid (`WidenBids`), the signed `Widen` gossip
and its checks, and a widened job rebuilt by replay."""

from __future__ import annotations

import pytest

from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.gossip import check_gossip
from distributeai.consensus.messages import Announce, Decline, Widen, Withdraw, sign, verify
from distributeai.consensus.sampling import SHARE_ALL, accept_widen, eligible, score
from distributeai.consensus.submitter import (
    Finished, SendAward, SubmitterJob, WidenBids, apply_input, decode_input, replay,
)
from distributeai.consensus.validate import MAX_CLOCK_SKEW_MS, MAX_SPEC_AGE_MS, CheckedWiden, widened_share

from .protocol_fixtures import EXECUTORS, NOW, SUBMITTER, bid, ident, make_spec

QUARTER = SHARE_ALL // 4
PEOPLE = [ident(i) for i in range(10, 120)]


def new_job(share: int, **spec_fields) -> SubmitterJob:
    spec = make_spec(**spec_fields)
    return SubmitterJob(SUBMITTER, sign(SUBMITTER, spec), spec, started_ms=NOW, share=share)


def split(job: SubmitterJob, share: int) -> tuple[list, list]:
    """PEOPLE eligible for the job at `share`, and those that are not."""
    inside = [p for p in PEOPLE if eligible(job.job_id, p.public_key, share)]
    return inside, [p for p in PEOPLE if p not in inside]


def reason_of(fn, *args) -> str:
    with pytest.raises(RemoteProtocolError) as e:
        fn(*args)
    return e.value.reason


def test_a_bid_or_decline_from_outside_the_share_is_refused_and_changes_nothing():
    job = new_job(QUARTER, replicas=2, quorum=2)
    inside, outside = split(job, QUARTER)
    assert inside and outside
    assert reason_of(job.receive_bid, bid(outside[0], job), NOW) == "not_eligible"
    decline = verify(sign(outside[1], Decline(job.job_id, outside[1].public_key, "busy", "busy", NOW)), Decline)
    assert reason_of(job.receive_decline, decline, NOW) == "not_eligible"
    assert not job.bids and not job.declines
    assert job.receive_bid(bid(inside[0], job), NOW) == []
    assert list(job.bids) == [inside[0].public_key]
    # At SHARE_ALL (the default) everyone is eligible, as before sampling, with the short window.
    everyone = new_job(SHARE_ALL)
    assert everyone.receive_bid(bid(outside[0], everyone), NOW) == []
    assert everyone.next_deadline_ms() == NOW + everyone.timing.bid_window_ms
    assert job.next_deadline_ms() == NOW + job.timing.sampled_bid_window_ms


def test_a_short_bid_window_widens_until_everyone_may_bid_then_closes_as_before():
    job = new_job(SHARE_ALL // 8, replicas=3, quorum=2)
    window = job.timing.sampled_bid_window_ms
    now, shares = NOW + window, []
    while job.share < SHARE_ALL:
        assert job.next_deadline_ms() == now
        actions = job.tick(now)
        assert actions == [WidenBids(job.share)] and job.state == "bidding"
        shares.append(job.share)
        now += window  # the window restarts at the widening
    assert shares == [SHARE_ALL // 4, SHARE_ALL // 2, SHARE_ALL]
    # A bidder eligible only now is taken; at SHARE_ALL the window ends as it always did.
    outsider = split(job, SHARE_ALL // 2)[1][0]
    assert job.receive_bid(bid(outsider, job), now - 1) == []
    assert job.next_deadline_ms() == now
    actions = job.tick(now)
    assert not any(isinstance(a, WidenBids) for a in actions) and job.state == "running"
    assert [a.executor for a in actions if isinstance(a, SendAward)] == [outsider.public_key]
    assert [h[1] for h in job.history].count("bids_widened") == 3


def test_enough_bids_in_the_sample_close_the_window_without_widening():
    job = new_job(QUARTER, replicas=2, quorum=2)
    inside, _ = split(job, QUARTER)
    for p in inside[:2]:
        job.receive_bid(bid(p, job), NOW)
    actions = job.tick(NOW + job.timing.sampled_bid_window_ms)
    assert [type(a) for a in actions] == [SendAward, SendAward] and job.share == QUARTER


def a_quorum_short_by_a_withdrawal() -> tuple[SubmitterJob, list, list, int]:
    """A 2-of-2 job at QUARTER with `undecided` 0 throughout: two eligible peers bid, the window's
    end awards both, then the first withdraws, its slot to fill and no eligible peer left. The
    job, the eligible peers, the withdrawal's actions and its time."""
    job = new_job(QUARTER, replicas=2, quorum=2, max_total_results=3)
    inside, _ = split(job, QUARTER)
    for p in inside[:2]:
        assert apply_input(job, "bid", bid(p, job), {"undecided": 0}, NOW) == []
    window = job.timing.sampled_bid_window_ms
    actions = apply_input(job, "tick", b"", {"undecided": 0}, NOW + window)
    assert sorted(a.executor for a in actions if isinstance(a, SendAward)) == sorted(p.public_key for p in inside[:2])
    quitter = inside[0]
    withdraw = verify(sign(quitter, Withdraw(job.job_id, quitter.public_key, "sandbox failed")), Withdraw)
    now = NOW + window + 10
    return job, inside, apply_input(job, "withdraw", withdraw, {"undecided": 0}, now), now


def test_a_quorum_out_of_reach_widens_before_it_fails():
    """Both awarded executors are needed (2 of 2); one withdraws and no eligible peer is left
    (`undecided` 0): the job widens (peers outside the sample may still bid) instead of failing
    at once, and fails only once every node was eligible and still nobody came."""
    job, _, actions, now = a_quorum_short_by_a_withdrawal()
    window = job.timing.sampled_bid_window_ms
    assert actions == [WidenBids(SHARE_ALL // 2)] and not job.done
    assert job.next_deadline_ms() == now + window  # it looks again after a window
    actions = apply_input(job, "tick", b"", {"undecided": 0}, now + window)
    assert actions == [WidenBids(SHARE_ALL)] and not job.done
    actions = apply_input(job, "tick", b"", {"undecided": 0}, now + 2 * window)
    assert isinstance(actions[-1], Finished) and actions[-1].status == "failed"


def test_a_bid_after_a_widening_fills_the_slot():
    job, inside, widened, now = a_quorum_short_by_a_withdrawal()
    assert widened == [WidenBids(SHARE_ALL // 2)]  # the newcomer, outside QUARTER, may bid only now
    newcomer = next(p for p in split(job, SHARE_ALL // 2)[0] if p not in inside)
    actions = apply_input(job, "bid", bid(newcomer, job), {"undecided": 0}, now + 10)
    assert [a.executor for a in actions if isinstance(a, SendAward)] == [newcomer.public_key]


def test_replay_rebuilds_a_widened_job_from_the_start_share_and_its_ticks():
    job = new_job(QUARTER, replicas=1, quorum=1)
    window = job.timing.sampled_bid_window_ms
    late = split(job, QUARTER)[1]
    late = next(p for p in late if eligible(job.job_id, p.public_key, SHARE_ALL // 2))
    raw_bid = bid(late, job).raw
    inputs = [("start", job.signed_spec, {"share": QUARTER}, NOW), ("tick", b"", {}, NOW + window),
              ("bid", raw_bid, {}, NOW + window + 5), ("tick", b"", {}, NOW + 2 * window)]
    live = None
    for kind, raw, meta, at in inputs:
        if kind == "start":
            live = SubmitterJob(SUBMITTER, raw, job.spec, started_ms=at, share=meta["share"])
        else:
            apply_input(live, kind, decode_input(kind, raw), meta, at)
    again = replay(SUBMITTER, live.timing, inputs)
    assert live.share == again.share == SHARE_ALL // 2
    assert live.state == again.state == "running" and list(again.awards) == [late.public_key]
    assert again.history == live.history
    # Without the start's share the job starts at SHARE_ALL: stored jobs from before sampling replay as they ran.
    assert replay(SUBMITTER, live.timing, [("start", job.signed_spec, {}, NOW)]).share == SHARE_ALL


# --- the messages ---------------------------------------------------------------------------------

def widen_msg(signer=SUBMITTER, share=SHARE_ALL // 2, created_ms=NOW, job_id=b"\5" * 32) -> bytes:
    return sign(signer, Widen(job_id, share, created_ms))


def test_announce_carries_its_share_and_refuses_a_bad_one():
    spec = sign(SUBMITTER, make_spec())
    ann = Announce(spec, (), b"", QUARTER)
    assert verify(sign(SUBMITTER, ann), Announce).msg.share == QUARTER
    assert verify(sign(SUBMITTER, Announce(spec, ())), Announce).msg.share == SHARE_ALL
    for bad in (0, SHARE_ALL + 1, True, -1, b"\1"):
        body = ann.to_body()[:-1] + [bad]
        assert reason_of(verify, SUBMITTER.sign("announce", body), Announce) == "malformed"
    assert reason_of(verify, SUBMITTER.sign("announce", ann.to_body()[:-1]), Announce) == "malformed"
    checked = check_gossip(sign(SUBMITTER, ann), SUBMITTER.public_key, NOW, 0)
    assert checked.share == QUARTER


def test_a_widening_from_its_author_passes_the_gossip_check_and_forgeries_do_not():
    raw = widen_msg()
    checked = check_gossip(raw, SUBMITTER.public_key, NOW, 8)
    assert checked == CheckedWiden(b"\5" * 32, SHARE_ALL // 2, SUBMITTER.public_key, NOW, raw)
    forged = raw[:-1] + bytes([raw[-1] ^ 1])
    assert reason_of(check_gossip, forged, SUBMITTER.public_key, NOW, 0) == "bad_signature"
    assert reason_of(check_gossip, raw, EXECUTORS[0].public_key, NOW, 0) == "wrong_sender"
    assert reason_of(check_gossip, raw, None, NOW, 0) == "wrong_sender"
    stale = widen_msg(created_ms=NOW - MAX_SPEC_AGE_MS - 1)
    assert reason_of(check_gossip, stale, SUBMITTER.public_key, NOW, 0) == "stale"
    future = widen_msg(created_ms=NOW + MAX_CLOCK_SKEW_MS + 1)
    assert reason_of(check_gossip, future, SUBMITTER.public_key, NOW, 0) == "future_dated"
    for bad in ([b"\5" * 32, 0, NOW], [b"\5" * 32, SHARE_ALL + 1, NOW], [b"\5" * 31, 2, NOW], [b"\5" * 32, 2]):
        assert reason_of(check_gossip, SUBMITTER.sign("widen", bad), SUBMITTER.public_key, NOW, 0) == "malformed"


def test_only_the_submitter_grows_a_share_and_a_replay_changes_nothing():
    checked = check_gossip(widen_msg(), SUBMITTER.public_key, NOW, 0)
    assert widened_share(checked, SUBMITTER.public_key, QUARTER) == SHARE_ALL // 2
    assert reason_of(widened_share, checked, SUBMITTER.public_key, SHARE_ALL // 2) == "replay"  # replayed
    assert reason_of(widened_share, checked, SUBMITTER.public_key, SHARE_ALL) == "replay"  # reordered
    stranger = EXECUTORS[0]
    theirs = check_gossip(widen_msg(stranger), stranger.public_key, NOW, 0)  # its own author: passes gossip
    assert reason_of(widened_share, theirs, SUBMITTER.public_key, QUARTER) == "wrong_signer"
    assert accept_widen(QUARTER, SHARE_ALL // 2) and not accept_widen(QUARTER, QUARTER)
    assert not accept_widen(SHARE_ALL // 2, QUARTER)


def test_a_sampled_job_widens_rather_than_give_strangers_a_slot_an_established_peer_outside_could_have():
    """n fresh eligible bids (reputation 0) while a connected peer outside the sample has earned
    reputation: no early close, and the window's end widens instead of settling (strangers_ahead)."""
    from distributeai.consensus.submitter_rules import strangers_ahead

    ranks = [(0, 0, 1, 0, b"a"), (0, 0, 1, 0, b"b"), (0, 0, 1, 0, b"c")]
    assert strangers_ahead(ranks, 3, SHARE_ALL // 2, 5)
    assert not strangers_ahead(ranks, 3, SHARE_ALL, 5)  # everyone is eligible: nobody is outside
    assert not strangers_ahead(ranks, 3, SHARE_ALL // 2, 0)  # nobody outside has earned anything
    assert not strangers_ahead(ranks, 3, SHARE_ALL // 2, None)
    assert not strangers_ahead(ranks[:2], 3, SHARE_ALL // 2, 5)  # short of bids: the other rule widens
    established = [(-5, 0, 1, 0, b"a"), (-5, 0, 1, 0, b"b"), (-10, 0, 1, 0, b"c")]
    assert not strangers_ahead(established, 3, SHARE_ALL // 2, 50)  # earned reputation holds the slots
    assert not strangers_ahead(ranks, 3, SHARE_ALL // 2, 5, widened=True)  # once only, from the first sample


def test_unbid_best_counts_the_undecided_peers_eligible_or_with_outside_those_outside_and_the_submitter():
    """`submitter_rules.unbid_best`, the one rule node/submitting.py and the simulator both apply."""
    from distributeai.consensus.submitter_rules import unbid_best

    job = new_job(QUARTER)
    inside, outside = split(job, QUARTER)
    rep = {p.public_key: 10 + i for i, p in enumerate(inside)} | {p.public_key: 50 + i for i, p in enumerate(outside)}
    rep_of = lambda key: rep.get(key, 0)  # noqa: E731
    peers = [p.public_key for p in PEOPLE] + [None]  # None: a peer whose key is unknown
    top_in = max(rep[p.public_key] for p in inside)
    assert unbid_best(job, peers, rep_of) == top_in
    assert unbid_best(job, peers, rep_of, outside=True) == max(rep[p.public_key] for p in outside)
    best_in = max(inside, key=lambda p: rep[p.public_key])
    assert unbid_best(job, peers, rep_of, bidder=best_in.public_key) < top_in  # the input's sender has decided
    job.receive_bid(bid(best_in, job), NOW + 1)
    assert unbid_best(job, peers, rep_of) < top_in  # it bid
    second = max((p for p in inside if p is not best_in), key=lambda p: rep[p.public_key])
    assert unbid_best(job, peers, rep_of) == rep[second.public_key]
    job.receive_decline(verify(sign(second, Decline(job.job_id, second.public_key, "busy", "busy", NOW)), Decline), NOW)
    assert unbid_best(job, peers, rep_of) < rep[second.public_key]  # it declined
    assert unbid_best(job, [], lambda key: -5) == 0  # a stranger's at least
    rep[SUBMITTER.public_key] = 99
    job.share = score(job.job_id, SUBMITTER.public_key)  # the submitter just outside its own job's sample
    assert unbid_best(job, [], rep_of, outside=True) == 99  # it counts, connected to nobody
    assert unbid_best(job, [], rep_of) == 0
    job.share += 1  # just inside: its own bid is waited for as any eligible peer's, and it is not outside
    assert unbid_best(job, [], rep_of) == 99 and unbid_best(job, [], rep_of, outside=True) == 0
    assert unbid_best(job, [], rep_of, bidder=SUBMITTER.public_key) == 0  # its own bid: decided
