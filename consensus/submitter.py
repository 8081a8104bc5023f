"""The submitter's side of one job as a pure state machine (h11-style).

`SubmitterJob` never does I/O and never reads a clock: every input carries `now_ms`, and every
method returns a list of actions for the adapter (node/) to carry out. It signs awards, reveal
requests and the certificate with the submitter's identity, which is pure computation. Anything
that depends on the node's changing view (a bidder's reputation) is passed in with the input, so
replaying stored inputs rebuilds exactly the same job.

The job's life, with BOINC's names for the policy (all in the signed spec):
- bidding: bids are collected for `bid_window_ms`, then ranked (reputation, then bytes of the
  job's inputs already held (`Bid.held`, BOINC's locality scheduling), then price, then fit, then
  H(job_id || bidder), which no bidder can predict before the announcement) and the best
  `target_nresults` (n) bidders are awarded. One peer never holds two slots. The window closes
  early once n bids are in and no peer that has not bid yet could outrank the n-th of them on
  reputation: the adapter passes, with each bid, the best reputation among the peers it could
  still hear from (`unbid_best`). Reputation is what keeps fresh identities (Sybils) behind
  established ones, so it is never cut short; ties on reputation are settled among the bids in
  hand, so a faster peer wins a tie (a job with inputs closes early only once the n-th best bid
  holds all of them: a holder still to answer would outrank it). Nor does the timed end cut it
  short: when the window ends while a peer that has not bid outranks the n-th best bid in hand
  (a missing bid counts as a stranger's, reputation 0), bidding stays open for it (`bids_wait`)
  until it bids or `bid_wait_reputation_ms` more have passed. On a busy machine an established
  peer's bid can take over a second, and the fresh identities that answered first would
  otherwise take its slot.
- sampling (consensus/sampling.py): only bidders `eligible(job_id, bidder, share)` may bid (`not_eligible`
  otherwise: a Sybil outside the sample gains nothing), `share` starting from the announcement's. When the
  bid window ends with fewer than n bids, or later the job is short of bidders (starved, or its quorum out
  of reach), and `share` < SHARE_ALL, the job widens (`WidenBids`: the share doubles, the adapter
  publishes a signed Widen; in bidding the window restarts), at most once per bid window, before it would
  settle for too few or give up: peers outside the sample could still bid. `unbid_best` and `undecided`
  count only connected peers eligible at the current share; `strangers_ahead` (submitter_rules.py) widens
  once rather than let fresh identities take slots from established peers outside the sample. A widening
  is re-derived on replay (from the stored inputs); the starting share is the start input's
  `meta["share"]`. A job that starts sampled has bid windows of `sampled_bid_window_ms`: its bidders are
  mostly peers it is not connected to (the announcement crosses the mesh, then each bidder dials).
- diversity: no two live slots go to bidders from the same address range (`subnet.subnet_of`:
  IPv4 /24, IPv6 /48, taken by the adapter from the connection each bid arrived on) while a
  bidder from another range is left; only then does the best remaining bidder overall get the
  slot ("unless too few peers exist"). A bidder of unknown range (None) conflicts with nobody.
  Colluders in one range thus rarely hold two slots of a job. Within the bidders that keep the
  slots diverse, the ranking above decides.
- running: each award has a deadline (`result_deadline_s`, BOINC's delay_bound). An executor that
  withdraws, misses its deadline, cannot be reached, or reveals something that breaks its seal is
  an error; it is replaced from the remaining bids (or, with none left, the adapter re-announces)
  until `max_total_results` awards were made. More than `max_error_results` errors fail the job.
- the commit phase closes once `min_quorum` (k) executors have committed, or once no awarded
  executor is still expected to commit. Only then are reveals requested, each executor's own
  once it has committed: a reveal goes to the submitter alone, so nobody can copy a revealed hash
  into a commit, and a copied commit names the wrong executor (see results.seal).
- declines: a node that will not bid says why in a signed Decline (a reason code). The adapter
  records with every input how many connected peers have neither bid nor declined yet
  (`undecided`, None if it cannot tell), and `apply_input` hands it to the job. Once bidding has closed, a job that could no longer
  reach k agreeing results even if every live executor, every unawarded bidder and every
  undecided peer delivered the same result (within `max_total_results`) ends failed at once, the
  declines counted by kind in its reason (`consensus.declines.failure_reason`: "no bids: 3 nodes
  lack image X"), instead of after `bid_wait_ms`. Peers the node is not connected to can still
  bid until then; what is certain is relative to the peers it hears from.
- the tally decides as soon as the outstanding results can no longer change the outcome:
  verified (k agree and lead), nondeterministic (n or more results, no two alike, and no further
  executor can be awarded: reported, not punished), failed (with the reason). If the results in hand are inconclusive but could still
  reach k, further executors are awarded, within `max_total_results`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .codec import Identity
from .declines import failure_reason
from .errors import RemoteProtocolError
from .ledger import REPUTATION_START
from .messages import (
    CERT_DECLINES_MAX, Award, Bid, Certificate, Commit, Decline, JobSpec, Reveal, RevealRequest,
    Signed, Withdraw, job_id_of, sign,
)
from .sampling import SHARE_ALL, widen
from .submitter_actions import (  # noqa: F401  (re-exported: the machine's actions and timing import from here)
    LIVE, TERMINAL, Action, Finished, Penalize, PublishCertificate, RequestReveal, SendAward, Timing, WidenBids,
    reannounce_after_ms,
)
from . import submitter_adaptive as adaptive
from .submitter_inputs import INPUT_TYPES, apply_input, decode_input, replay  # noqa: F401  (re-exported)
from .submitter_rules import (  # noqa: F401  (re-exported)
    bids_to_show, check_eligible, check_reveal, homogeneous, rank_key, strangers_ahead,
)
from .tally import Tally
from .verdict import job_tally, nondeterministic, top_agreement

@dataclass
class SubmitterJob:
    identity: Identity
    signed_spec: bytes
    spec: JobSpec
    started_ms: int
    timing: Timing = field(default_factory=Timing)
    share: int = SHARE_ALL  # who may bid: sampling.eligible at this share (the announcement's, widened)
    state: str = "bidding"
    reason: str = ""
    bids: dict[bytes, Signed] = field(default_factory=dict)
    declines: dict[bytes, Signed] = field(default_factory=dict)
    # Connected peers that have neither bid nor declined, as the adapter saw them with the input
    # being applied (`apply_input` sets it from every input's meta); None: it cannot tell.
    undecided: int | None = None
    rank: dict[bytes, tuple] = field(default_factory=dict)
    subnet: dict[bytes, str | None] = field(default_factory=dict)  # each bidder's address range
    awards: dict[bytes, Signed] = field(default_factory=dict)
    slot: dict[bytes, str] = field(default_factory=dict)
    commits: dict[bytes, Signed] = field(default_factory=dict)
    reveals: dict[bytes, Signed] = field(default_factory=dict)
    reveal_asked_ms: dict[bytes, int] = field(default_factory=dict)
    commit_closed: bool = False
    awaiting_reputation: bool = False  # the bid window ended; waiting for a better-reputed peer's bid
    errors: int = 0
    extra: int = 0  # executors wanted beyond n, when the results in hand are inconclusive
    starved_since_ms: int | None = None
    widened_ms: int | None = None  # the last widening; the bid window restarts there
    widen_pending: bool = False  # short of bidders, the next widening waits for widened_ms + window
    history: list[tuple[int, str, bytes, str]] = field(default_factory=list)
    result: Tally | None = None
    certificate: bytes | None = None
    # Adaptive verification (submitter_adaptive.py): each bidder's CV as the adapter passed it,
    # the mode, the trusted executor, the CV it was trusted at, and the draw over its seal.
    trust: dict[bytes, int] = field(default_factory=dict)
    mode: str | None = None
    trusted: bytes | None = None
    trust_cv: int = 0
    draw: bytes | None = None
    drawn: bool | None = None

    def __post_init__(self) -> None:
        self.job_id = job_id_of(self.signed_spec)
        self.sampled = self.share < SHARE_ALL  # its bid windows are sampled_bid_window_ms long

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def wants_bids(self) -> bool:
        """Short of executors with no unawarded bid left: the adapter should re-announce."""
        return not self.done and (self.state == "bidding" and len(self.bids) < self.spec.replicas
                                  or self.starved_since_ms is not None)

    def next_deadline_ms(self) -> int | None:
        if self.done:
            return None
        times = []
        if self.state == "bidding":
            times.append(self._window_end() + (self.timing.bid_wait_reputation_ms if self.awaiting_reputation else 0))
        if self.widen_pending and self.widened_ms is not None:
            times.append(self.widened_ms + self._window_ms())
        times += [a.msg.deadline_ms for e, a in self.awards.items() if self.slot[e] == "awarded"]
        times += [t + self.timing.reveal_window_ms for e, t in self.reveal_asked_ms.items()
                  if self.slot[e] == "committed"]
        if self.starved_since_ms is not None:
            times.append(self.starved_since_ms + self.timing.bid_wait_ms)
        return min(times) if times else None

    # --- inputs -------------------------------------------------------------------------------

    def receive_bid(self, bid: Signed, now_ms: int, reputation: int = 0,
                    unbid_best: int | None = None, subnet: str | None = None,
                    outside_best: int | None = None, trust: int = 0) -> list[Action]:
        """`reputation` is the bidder's reputation in this node's view when the bid arrived;
        `unbid_best`, if given, the best reputation any peer that has not bid could have (see
        the module docstring); None keeps the window open for its whole length. `subnet` is the
        address range of the connection the bid came on (`subnet.subnet_of`), None if unknown.
        A bidder not eligible at the job's share is refused (`not_eligible`). `outside_best`: the
        best reputation of a connected peer outside the sample (`strangers_ahead`). `trust`: the
        bidder's CV in the job's runtime class in this node's view (adaptive jobs)."""
        b: Bid = bid.msg
        self._check_job(b.job_id, "bid")
        if self.done:
            raise RemoteProtocolError("job_finished", "the job has ended")
        check_eligible(self.job_id, b.bidder, self.share)
        if b.bidder in self.bids:
            raise RemoteProtocolError("duplicate", "peer already bid")
        self.bids[b.bidder] = bid
        self.rank[b.bidder] = rank_key(self.job_id, b, self.spec, reputation)
        self.subnet[b.bidder] = subnet
        self.trust[b.bidder] = trust
        if self.state == "bidding":
            if (unbid_best is None or not self._bids_settled(unbid_best, short_ok=self.awaiting_reputation)
                    or not (self.awaiting_reputation or self._locality_settled())
                    or strangers_ahead(list(self.rank.values()), self.spec.replicas, self.share, outside_best,
                                       self.widened_ms is not None)):
                return []
            self.state = "running"
            self.history.append((now_ms, "bids_closed", b"",
                                 f"{len(self.bids)} bids, " + ("waited" if self.awaiting_reputation else "early")))
        return self._advance(now_ms)

    def receive_decline(self, decline: Signed, now_ms: int, unbid_best: int | None = None) -> list[Action]:
        """A peer will not bid, and says why. Kept for the job's reason and certificate; it may
        show the job can no longer reach a quorum (`undecided`). When bidding is held open for a
        better-reputed peer (`bids_wait`) and `unbid_best` (as for `receive_bid`, this decline
        counted) shows none is left to wait for, bidding closes now."""
        d: Decline = decline.msg
        self._check_job(d.job_id, "decline")
        if self.done:
            raise RemoteProtocolError("job_finished", "the job has ended")
        check_eligible(self.job_id, d.bidder, self.share, "decline")  # an ineligible node sends nothing
        if d.bidder in self.declines or d.bidder in self.bids:
            raise RemoteProtocolError("duplicate", "peer already bid or declined")
        self.declines[d.bidder] = decline
        self.history.append((now_ms, "declined", d.bidder, f"{d.code}: {d.detail}"))
        if (self.state == "bidding" and self.awaiting_reputation and unbid_best is not None
                and self._bids_settled(unbid_best, short_ok=True)):
            self.state = "running"
            self.history.append((now_ms, "bids_closed", b"", f"{len(self.bids)} bids, waited"))
        return self._advance(now_ms)

    def _bids_settled(self, unbid_best: int, short_ok: bool = False) -> bool:
        """The n-th best bid in hand has at least `unbid_best` reputation. With fewer than n bids:
        never before the window's end; after it (`short_ok`), a missing bid counts as a stranger's."""
        n = self.spec.replicas
        if len(self.bids) < n:
            return short_ok and REPUTATION_START >= unbid_best
        nth = sorted(self.rank.values())[n - 1]
        return -nth[0] >= unbid_best

    def _locality_settled(self) -> bool:
        """A job with inputs closes its bid window early only when the n-th best bid in hand holds
        all of them: otherwise a holder's bid still to come would outrank it (`rank_key`), so the
        window runs its length (holders answer within it), as locality scheduling wants."""
        total = self.spec.inputs_size
        if not self.spec.inputs or len(self.bids) < self.spec.replicas:
            return True
        nth = sorted(self.rank.values())[self.spec.replicas - 1]
        return -nth[1] >= total

    def receive_commit(self, commit: Signed, now_ms: int) -> list[Action]:
        c: Commit = commit.msg
        self._check_job(c.job_id, "commit")
        if c.executor not in self.awards:
            raise RemoteProtocolError("not_awarded", "commit from a peer without an award")
        if self.done:
            raise RemoteProtocolError("job_finished", "the job has ended")
        status = self.slot[c.executor]
        if status in ("committed", "revealed"):
            raise RemoteProtocolError("duplicate", "executor already committed")
        if status != "awarded" or now_ms > self.awards[c.executor].msg.deadline_ms:
            raise RemoteProtocolError("late_commit", "the executor's commit deadline has passed")
        self.commits[c.executor] = commit
        self._set(c.executor, "committed", now_ms, "commit")
        adaptive.on_commit(self, c.executor, c.seal, now_ms)
        return self._advance(now_ms)

    def receive_withdraw(self, withdraw: Signed, now_ms: int) -> list[Action]:
        w: Withdraw = withdraw.msg
        self._check_job(w.job_id, "withdraw")
        if w.executor not in self.awards:
            raise RemoteProtocolError("not_awarded", "withdraw from a peer without an award")
        if self.done or self.slot[w.executor] != "awarded":
            raise RemoteProtocolError("unexpected_withdraw", "nothing to withdraw from")
        self._error(w.executor, "withdrawn", now_ms, w.reason)
        return self._advance(now_ms)

    def award_undelivered(self, executor: bytes, now_ms: int) -> list[Action]:
        """The adapter could not deliver the award: the executor is gone. Replace it now."""
        if self.done or self.slot.get(executor) != "awarded":
            return []
        self._error(executor, "unreachable", now_ms)
        return self._advance(now_ms)

    def receive_reveal(self, reveal: Signed, now_ms: int) -> list[Action]:
        r: Reveal = reveal.msg
        self._check_job(r.job_id, "reveal")
        if self.done:
            raise RemoteProtocolError("job_finished", "the job has ended")
        if r.executor not in self.reveal_asked_ms or self.slot.get(r.executor) != "committed":
            raise RemoteProtocolError("unexpected_reveal", "no reveal was asked of this peer")
        try:
            check_reveal(r, self.commits[r.executor].msg.seal, self.spec)
        except RemoteProtocolError as exc:
            self._error(r.executor, exc.reason, now_ms)
            return [Penalize(r.executor, exc.reason), *self._advance(now_ms)]
        self.reveals[r.executor] = reveal
        self._set(r.executor, "revealed", now_ms, "reveal", r.result_hash.hex()[:16])
        return self._advance(now_ms)

    def cancel(self, now_ms: int) -> list[Action]:
        """The submitter's user gave up on the job: it ends failed("cancelled"), certificate and all."""
        if self.done:
            return []
        return self._finish("failed", "cancelled", now_ms)

    def tick(self, now_ms: int, unbid_best: int | None = None, outside_best: int | None = None) -> list[Action]:
        """Advance on time alone; call at or after `next_deadline_ms()`. `unbid_best` and
        `outside_best` as for `receive_bid`, as they stand now; None closes the bid window at its
        end, whoever bid."""
        if self.done:
            return []
        actions: list[Action] = []
        window_end = self._window_end()
        if self.state == "bidding" and now_ms >= window_end and self.share < SHARE_ALL \
                and (len(self.bids) < self.spec.replicas
                     or strangers_ahead(list(self.rank.values()), self.spec.replicas, self.share, outside_best,
                                     self.widened_ms is not None)):
            return self._widen(now_ms)  # too few bids, or strangers ahead: more may bid, in a new window
        if self.state == "bidding" and now_ms >= window_end:
            if (unbid_best is None or self._bids_settled(unbid_best, short_ok=True)
                    or now_ms >= window_end + self.timing.bid_wait_reputation_ms):
                self.state = "running"
                waited = ", waited" if self.awaiting_reputation else ""
                self.history.append((now_ms, "bids_closed", b"", f"{len(self.bids)} bids{waited}"))
            elif not self.awaiting_reputation:
                self.awaiting_reputation = True
                self.history.append((now_ms, "bids_wait", b"",
                                     f"{len(self.bids)} bids; a peer of reputation {unbid_best} has not bid"))
        for e, a in list(self.awards.items()):
            if self.slot[e] == "awarded" and now_ms >= a.msg.deadline_ms:
                self._error(e, "timed_out", now_ms)
                actions.append(Penalize(e, "never_committed"))
        for e, asked in list(self.reveal_asked_ms.items()):
            if self.slot[e] == "committed" and now_ms >= asked + self.timing.reveal_window_ms:
                self._error(e, "no_reveal", now_ms)
                actions.append(Penalize(e, "never_revealed"))
        if self.state == "bidding":
            return actions
        return actions + self._advance(now_ms)

    # --- the rules --------------------------------------------------------------------------

    def _window_end(self) -> int:
        """The bid window's end: it restarts at each widening made while bidding."""
        return max(self.started_ms, self.widened_ms or 0) + self._window_ms()

    def _window_ms(self) -> int:
        return self.timing.sampled_bid_window_ms if self.sampled else self.timing.bid_window_ms

    def _widen(self, now_ms: int) -> list[Action]:
        """Double the eligible share (sampling.widen), at most once per bid window: the adapter
        publishes the signed Widen; while bidding, the window restarts."""
        if self.share >= SHARE_ALL:
            return []
        if self.widened_ms is not None and now_ms < self.widened_ms + self._window_ms():
            self.widen_pending = True
            return []
        # Running, a tick at the next window's end looks again (a bid may have come, or not).
        self.share, self.widened_ms, self.widen_pending = widen(self.share), now_ms, self.state != "bidding"
        self.awaiting_reputation = False
        if self.starved_since_ms is not None:
            self.starved_since_ms = now_ms  # the wait for bidders counts from the widening
        self.history.append((now_ms, "bids_widened", b"", f"share {self.share / SHARE_ALL:.4g}, {len(self.bids)} bids"))
        return [WidenBids(self.share)]

    def _advance(self, now_ms: int) -> list[Action]:
        if self.done or self.state == "bidding":
            return []
        adaptive.decide(self, now_ms)
        n, k = adaptive.policy(self)
        self.widen_pending = False
        if self.errors > self.spec.max_error_results:
            return self._finish("failed", "too_many_errors", now_ms)
        actions: list[Action] = []
        if self._hopeless():  # before any award: awards that cannot reach a quorum are not sent
            if self.share < SHARE_ALL:  # peers outside the sample could still bid: widen first
                return self._widen(now_ms)
            reveals = {e: s.msg for e, s in self.reveals.items()}
            status = "nondeterministic" if nondeterministic(self.spec, reveals) else "failed"
            what = "no bidders left to replace failed executors" if self.errors else ""
            return self._finish(status, self._failure_reason(what), now_ms)
        actions += self._fill(now_ms)
        if self.starved_since_ms is not None:
            actions += self._widen(now_ms)
        pending = [e for e in self.awards if self.slot[e] == "awarded"]
        committed = [e for e in self.awards if self.slot[e] in ("committed", "revealed")]
        if not self.commit_closed and (len(committed) >= k or (committed and not pending)):
            self.commit_closed = True
            self.history.append((now_ms, "commits_closed", b"", f"{len(committed)} commits"))
        if self.commit_closed:
            for e in committed:
                if e not in self.reveal_asked_ms:
                    self.reveal_asked_ms[e] = now_ms
                    actions.append(RequestReveal(e, sign(self.identity, RevealRequest(self.job_id, e))))
        reveals = {e: s.msg for e, s in self.reveals.items()}
        outstanding = len(pending) + sum(1 for e in committed if self.slot[e] == "committed")
        self.result = job_tally(self.spec, reveals, outstanding, k)
        if self.result.outcome == "verified":
            return actions + self._finish("verified", "", now_ms)
        if adaptive.escalate(self, self.result.outcome, outstanding, now_ms):
            return actions + self._advance(now_ms)
        if outstanding:
            return actions
        # Nothing outstanding and no verdict.
        # Two results that differ may be one liar; three or more, no two alike, may be the job
        # itself, or one honest executor among independent liars. So while bidders remain and
        # `max_total_results` allows, more executors are awarded (as BOINC issues more results);
        # only when none can be is it called nondeterministic. Liars cannot force that verdict
        # on a job that has honest bidders to spare.
        nondet = nondeterministic(self.spec, reveals)
        if (nondet and len(reveals) >= max(self.spec.replicas, 3) and (len(self.awards) >= self.spec.max_total_results
                                                                       or not self._candidates() and self.share >= SHARE_ALL)):
            return actions + self._finish("nondeterministic", "no two results agree", now_ms)
        top = top_agreement(self.spec, reveals)
        live = sum(1 for e in self.awards if self.slot[e] in LIVE)
        if live >= n + self.extra:
            self.extra += max(1, k - top)  # ask for as many more as could still reach k
            more = self._fill(now_ms)
            if self.starved_since_ms is not None:
                more += self._widen(now_ms)
            if more:
                return actions + more
        if len(self.awards) >= self.spec.max_total_results:
            status = "nondeterministic" if nondet else "failed"
            return actions + self._finish(status, "max_total_results reached without a quorum", now_ms)
        if (self.starved_since_ms is not None and self.share >= SHARE_ALL
                and now_ms >= self.starved_since_ms + self.timing.bid_wait_ms):
            status = "nondeterministic" if nondet else "failed"
            why = "no bidders left to replace failed executors" if self.awards else ""
            return actions + self._finish(status, self._failure_reason(why), now_ms)
        return actions

    def _hopeless(self) -> bool:
        """Even if every live executor, every unawarded bidder and every undecided connected peer
        delivered the same result, within `max_total_results`, fewer than k would agree. Unknown
        (`undecided` None) is never hopeless: the timeouts decide then."""
        if self.undecided is None:
            return False
        reveals = {e: s.msg for e, s in self.reveals.items()}
        unrevealed = sum(1 for e in self.awards if self.slot[e] in ("awarded", "committed"))
        more = min(len(self._candidates()) + self.undecided, self.spec.max_total_results - len(self.awards))
        return top_agreement(self.spec, reveals) + unrevealed + max(0, more) < adaptive.policy(self)[1]

    def _failure_reason(self, what: str) -> str:
        """Why the job ends for want of executors, the declines counted by kind (consensus/declines.py)."""
        return failure_reason(self.spec, [s.msg.code for s in self.declines.values()], len(self.bids), what,
                              self.undecided or 0)

    def _fill(self, now_ms: int) -> list[Action]:
        """Award the best remaining bidders until n (plus any extra) slots are live, each from an
        address range no live slot has while such a bidder is left (the module docstring)."""
        actions: list[Action] = []
        target = adaptive.policy(self)[0] + self.extra
        while (sum(1 for e in self.awards if self.slot[e] in LIVE) < target
               and len(self.awards) < self.spec.max_total_results):
            candidates = self._candidates()
            if not candidates:
                break
            taken = {self.subnet.get(e) for e in self.awards if self.slot[e] in LIVE} - {None}
            diverse = [e for e in candidates if self.subnet.get(e) is None or self.subnet[e] not in taken]
            best = min(diverse or candidates, key=lambda e: self.rank[e])
            actions.append(self._award(best, now_ms))
        short = sum(1 for e in self.awards if self.slot[e] in LIVE) < target
        if short and len(self.awards) < self.spec.max_total_results:
            if self.starved_since_ms is None:
                self.starved_since_ms = now_ms
        else:
            self.starved_since_ms = None
        return actions

    def _candidates(self) -> list[bytes]:
        """Bidders not yet awarded a slot (for a homogeneous job, of the first award's platform)."""
        return homogeneous([e for e in self.bids if e not in self.awards], self)

    def _award(self, executor: bytes, now_ms: int) -> SendAward:
        deadline = now_ms + self.spec.result_deadline_s * 1000
        award = Award(self.job_id, executor, len(self.awards), deadline)
        raw = sign(self.identity, award)
        what = "replacement" if len(self.awards) >= self.spec.replicas else "award"
        self.awards[executor] = Signed(award, self.identity.public_key, raw)
        self._set(executor, "awarded", now_ms, what, f"slot {award.slot}")
        return SendAward(executor, raw)

    def _set(self, executor: bytes, status: str, now_ms: int, event: str, detail: str = "") -> None:
        self.slot[executor] = status
        self.history.append((now_ms, event, executor, detail))

    def _error(self, executor: bytes, reason: str, now_ms: int, detail: str = "") -> None:
        self.errors += 1
        self._set(executor, reason, now_ms, "error", f"{reason} {detail}".strip())
        adaptive.on_error(self, executor, now_ms)

    def _check_job(self, job_id: bytes, what: str) -> None:
        if job_id != self.job_id:
            raise RemoteProtocolError("unknown_job", f"{what} for another job")

    def _finish(self, status: str, reason: str, now_ms: int) -> list[Action]:
        self.state = status
        self.reason = reason
        self.starved_since_ms = None
        self.result = job_tally(self.spec, {e: s.msg for e, s in self.reveals.items()}, quorum=adaptive.final_quorum(self))
        cert = Certificate(
            job_id=self.job_id,
            status=status,
            result_hash=(self.result.result_hash or b"") if status == "verified" else b"",
            signed_spec=self.signed_spec,
            awards=tuple(a.raw for a in self.awards.values()),
            reveals=tuple(self.reveals[e].raw for e in sorted(self.reveals)),
            created_ms=now_ms,
            reason="" if status == "verified" else reason,
            bids=tuple(self.bids[e].raw for e in bids_to_show(self)),
            declines=tuple(d.raw for d in list(self.declines.values())[:CERT_DECLINES_MAX]),
            evidence=adaptive.evidence(self),
        )
        self.certificate = sign(self.identity, cert)
        self.history.append((now_ms, status, b"", reason))
        return [PublishCertificate(self.certificate), Finished(status, reason, self.result)]
