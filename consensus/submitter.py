"""The submitter's side of one job as a pure state machine (h11-style).

`SubmitterJob` never does I/O and never reads a clock: every input carries `now_ms`, and every
method returns a list of actions for the adapter (node/) to carry out. It signs awards, reveal
requests and the certificate with the submitter's identity, which is pure computation.

States and transitions:
    bidding    --bid (until n awarded)------------------------> executing
    executing  --all awarded executors committed--------------> revealing
    executing  --commit deadline, >= k commits----------------> revealing
    executing  --commit deadline, < k commits-----------------> failed("too_few_commits")
    bidding    --bid deadline, < k bidders--------------------> failed("too_few_bids")
    bidding    --bid deadline, >= k bidders-------------------> executing (awards what it has)
    revealing  --all committed executors revealed-------------> verified | failed("no_quorum")
    revealing  --reveal deadline-------------------------------> verified | failed("no_quorum")
Awards go to the first n bidders (ranking by reputation and price comes later); one peer never holds
two slots. Messages that are illegal in the current state raise `RemoteProtocolError` and change
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .codec import Identity
from .errors import RemoteProtocolError
from .messages import (
    Award, Bid, Certificate, Commit, JobSpec, Reveal, RevealRequest, Signed, job_id_of, sign,
)
from .results import result_hash as compute_result_hash
from .results import seal as compute_seal
from .tally import Tally, tally

# Default phase lengths. Bids come within a gossip round trip, so a few seconds is generous; the
# commit deadline adds the job's own timeout to time for pulling an image and starting a sandbox.
BID_WINDOW_MS = 10_000
START_GRACE_MS = 30_000
REVEAL_WINDOW_MS = 10_000


@dataclass(frozen=True)
class SendAward:
    executor: bytes
    award: bytes  # signed Award envelope


@dataclass(frozen=True)
class RequestReveal:
    executor: bytes
    request: bytes  # signed RevealRequest envelope


@dataclass(frozen=True)
class PublishCertificate:
    certificate: bytes  # signed Certificate envelope


@dataclass(frozen=True)
class Finished:
    status: str  # "verified" | "failed"
    reason: str
    tally: Tally | None


Action = SendAward | RequestReveal | PublishCertificate | Finished


@dataclass
class SubmitterJob:
    identity: Identity
    signed_spec: bytes
    spec: JobSpec
    started_ms: int
    bid_window_ms: int = BID_WINDOW_MS
    start_grace_ms: int = START_GRACE_MS
    reveal_window_ms: int = REVEAL_WINDOW_MS
    state: str = "bidding"
    reason: str = ""
    bids: dict[bytes, Signed] = field(default_factory=dict)
    awards: dict[bytes, Signed] = field(default_factory=dict)
    commits: dict[bytes, Signed] = field(default_factory=dict)
    reveals: dict[bytes, Signed] = field(default_factory=dict)
    result: Tally | None = None
    certificate: bytes | None = None
    phase_deadline_ms: int = 0

    def __post_init__(self) -> None:
        self.job_id = job_id_of(self.signed_spec)
        self.phase_deadline_ms = self.started_ms + self.bid_window_ms

    @property
    def done(self) -> bool:
        return self.state in ("verified", "failed")

    # --- inputs -------------------------------------------------------------------------------

    def receive_bid(self, bid: Signed, now_ms: int) -> list[Action]:
        b: Bid = bid.msg
        self._check_job(b.job_id, "bid")
        if self.state != "bidding":
            raise RemoteProtocolError("late_bid", "bidding has closed")
        if b.bidder in self.bids:
            raise RemoteProtocolError("duplicate", "peer already bid")
        self.bids[b.bidder] = bid
        actions: list[Action] = [self._award(b.bidder, now_ms)]
        if len(self.awards) >= self.spec.replicas:
            actions += self._enter_executing(now_ms)
        return actions

    def receive_commit(self, commit: Signed, now_ms: int) -> list[Action]:
        c: Commit = commit.msg
        self._check_job(c.job_id, "commit")
        if c.executor not in self.awards:
            raise RemoteProtocolError("not_awarded", "commit from a peer without an award")
        if self.state not in ("bidding", "executing"):
            raise RemoteProtocolError("late_commit", "the commit phase has closed")
        if c.executor in self.commits:
            raise RemoteProtocolError("duplicate", "executor already committed")
        self.commits[c.executor] = commit
        if self.state == "executing" and len(self.commits) == len(self.awards):
            return self._enter_revealing(now_ms)
        return []

    def receive_reveal(self, reveal: Signed, now_ms: int) -> list[Action]:
        r: Reveal = reveal.msg
        self._check_job(r.job_id, "reveal")
        if self.state != "revealing":
            raise RemoteProtocolError("unexpected_reveal", f"job is {self.state}")
        if r.executor not in self.commits:
            raise RemoteProtocolError("not_committed", "reveal from a peer without a commit")
        if r.executor in self.reveals:
            raise RemoteProtocolError("duplicate", "executor already revealed")
        check_reveal(r, self.commits[r.executor].msg.seal)
        self.reveals[r.executor] = reveal
        if len(self.reveals) == len(self.commits):
            return self._finish(now_ms)
        return []

    def tick(self, now_ms: int) -> list[Action]:
        """Advance on time alone; call at or after `phase_deadline_ms`."""
        if self.done or now_ms < self.phase_deadline_ms:
            return []
        if self.state == "bidding":
            if len(self.awards) < self.spec.quorum:
                return self._fail("too_few_bids")
            return self._enter_executing(now_ms)
        if self.state == "executing":
            if len(self.commits) < self.spec.quorum:
                return self._fail("too_few_commits")
            return self._enter_revealing(now_ms)
        if self.state == "revealing":
            return self._finish(now_ms)
        return []

    # --- transitions --------------------------------------------------------------------------

    def _check_job(self, job_id: bytes, what: str) -> None:
        if job_id != self.job_id:
            raise RemoteProtocolError("unknown_job", f"{what} for another job")

    def _award(self, executor: bytes, now_ms: int) -> SendAward:
        deadline = now_ms + self.spec.timeout_s * 1000 + self.start_grace_ms
        award = Award(self.job_id, executor, len(self.awards), deadline, self.signed_spec)
        raw = sign(self.identity, award)
        self.awards[executor] = Signed(award, self.identity.public_key, raw)
        return SendAward(executor, raw)

    def _enter_executing(self, now_ms: int) -> list[Action]:
        self.state = "executing"
        self.phase_deadline_ms = max(a.msg.deadline_ms for a in self.awards.values())
        if self.awards and len(self.commits) == len(self.awards):
            return self._enter_revealing(now_ms)
        return []

    def _enter_revealing(self, now_ms: int) -> list[Action]:
        self.state = "revealing"
        self.phase_deadline_ms = now_ms + self.reveal_window_ms
        return [
            RequestReveal(e, sign(self.identity, RevealRequest(self.job_id, e)))
            for e in sorted(self.commits)
        ]

    def _finish(self, now_ms: int) -> list[Action]:
        votes = {e: s.msg.result_hash for e, s in self.reveals.items()}
        self.result = tally(votes, self.spec.quorum, outstanding=0)
        status = "verified" if self.result.outcome == "verified" else "failed"
        self.state = status
        self.reason = "" if status == "verified" else self.result.outcome
        cert = Certificate(
            job_id=self.job_id,
            status=status,
            result_hash=self.result.result_hash or b"",
            signed_spec=self.signed_spec,
            awards=tuple(self.awards[e].raw for e in sorted(self.awards)),
            reveals=tuple(self.reveals[e].raw for e in sorted(self.reveals)),
            created_ms=now_ms,
        )
        self.certificate = sign(self.identity, cert)
        return [PublishCertificate(self.certificate), Finished(status, self.reason, self.result)]

    def _fail(self, reason: str) -> list[Action]:
        self.state = "failed"
        self.reason = reason
        return [Finished("failed", reason, None)]


def check_reveal(r: Reveal, committed_seal: bytes) -> None:
    """A reveal must hash to its own claimed result and match the executor's earlier seal."""
    expected = compute_result_hash(r.exit_code, r.timed_out, r.stdout, r.stdout_truncated)
    if r.result_hash != expected:
        raise RemoteProtocolError("bad_result_hash", "result hash does not match the revealed output")
    if compute_seal(r.executor, r.job_id, r.result_hash) != committed_seal:
        raise RemoteProtocolError("seal_mismatch", "reveal does not match the executor's seal")
