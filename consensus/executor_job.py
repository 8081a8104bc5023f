"""The executor's side of one awarded job as a pure state machine, in the style of `SubmitterJob`.

`ExecutorJob` never does I/O and never reads a clock: every input carries `now_ms` and returns a
list of actions for the adapter (node/executing.py) to carry out. It signs the commit and the
withdrawal with the executor's identity, which is pure computation. The adapter stores each input
before acting on it; `replay` of the stored inputs rebuilds the same job after a restart, and
`resume` says what to do again (run what was awarded but not run, send a commit not yet accepted).

States: awarded -> running -> executed -> committed -> revealed, or failed (the sandbox could not
run the job: a withdrawal is sent, so the submitter replaces this executor at once), or ended (the
job ended at its submitter before this executor's part did: nothing more is run, sent or revealed).

Inputs (`apply_input` kinds, the stored `kind`):
    start        the award was accepted (or the job resumed unrun): run it            -> RunJob
    ran          the run's signed reveal (raw), its summary (meta): commit to it       -> SendCommit
    run_failed   the sandbox could not run it (meta reason): withdraw                  -> SendWithdraw
    sent         the submitter accepted the commit or the withdrawal
    refused      the submitter refused it (meta reason): nothing more is sent
    unreachable  the submitter could not be reached: send again after a back-off (0.5 s doubling)
                 up to SEND_RETRIES attempts in all, then give up
    reveal_asked the submitter asked for the reveal: answer it once something was committed
    crashed      an unexpected error ended the job here (meta reason): before anything was
                 committed, withdraw as run_failed does (the submitter replaces this executor at
                 once instead of waiting out its deadline); after, nothing more is sent
    ended        the job ended at its submitter (meta reason, see `ended_reason`): its certificate
                 (checked; any status) arrived, or its submitter (this node) cancelled it. A run in
                 progress or not begun is stopped (-> StopRun); a commit not yet accepted is not
                 sent again; nothing is revealed. A job already revealed or failed keeps its state.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Identity
from .errors import RemoteProtocolError
from .executor import make_commit
from .messages import Award, JobSpec, Reveal, Withdraw, sign, verify

SEND_RETRIES = 6  # the submitter may be restarting; back-offs of 0.5 s doubling: 15.5 s between 6 tries
RETRY_BASE_MS = 500
# States the end of the job at its submitter still changes (`ended`): this executor's part was not over.
UNFINISHED = ("awarded", "running", "executed", "committed")
# States from which a reveal can be answered. "executed": the commit reached the submitter (it
# asks only executors it has a commit from) but the answer to it was lost.
REVEALABLE = ("executed", "committed", "revealed")


@dataclass(frozen=True)
class RunJob:
    """Run the job in the sandbox; feed back `ran` (with the signed reveal) or `run_failed`."""


@dataclass(frozen=True)
class StopRun:
    """Stop the job's sandbox run (kill its container or processes) and free its run slot; the run
    leaves no result (nothing is fed back)."""


@dataclass(frozen=True)
class SendCommit:
    commit: bytes  # signed Commit envelope
    delay_ms: int = 0  # wait this long first (a retry's back-off)


@dataclass(frozen=True)
class SendWithdraw:
    withdraw: bytes  # signed Withdraw envelope
    delay_ms: int = 0


@dataclass(frozen=True)
class AnswerReveal:
    reveal: bytes  # signed Reveal envelope, the answer to the request


Action = RunJob | StopRun | SendCommit | SendWithdraw | AnswerReveal


@dataclass
class ExecutorJob:
    identity: Identity
    award: Award
    spec: JobSpec
    state: str = "awarded"
    reason: str = ""
    reveal: bytes | None = None
    commit: bytes | None = None
    withdraw: bytes | None = None
    attempts: int = 0  # sends of the current message that found the submitter unreachable
    updated_ms: int = 0

    @property
    def job_id(self) -> bytes:
        return self.award.job_id

    def start(self, now_ms: int) -> list[Action]:
        if self.state != "awarded":
            return []  # a repeated award changes nothing
        return self._to("running", now_ms, [RunJob()])

    def ran(self, reveal: bytes, now_ms: int) -> list[Action]:
        if self.state != "running":
            return []
        r: Reveal = verify(reveal, Reveal).msg
        self.reveal = reveal
        self.commit = make_commit(self.identity, self.job_id, r.result_hash)
        self.attempts = 0
        return self._to("executed", now_ms, [SendCommit(self.commit)])

    def run_failed(self, reason: str, now_ms: int) -> list[Action]:
        if self.state != "running":
            return []
        self.reason = reason
        self.withdraw = sign(self.identity, Withdraw(self.job_id, self.identity.public_key, reason[:200]))
        self.attempts = 0
        return self._to("failed", now_ms, [SendWithdraw(self.withdraw)])

    def sent(self, now_ms: int) -> list[Action]:
        """The submitter accepted what was last sent: a commit makes the job committed."""
        self.attempts = 0
        return self._to("committed", now_ms, []) if self.state == "executed" else self._to(self.state, now_ms, [])

    def refused(self, reason: str, now_ms: int) -> list[Action]:
        self.attempts = SEND_RETRIES  # a refusal is an answer: nothing more is sent
        self.updated_ms = now_ms
        return []

    def unreachable(self, now_ms: int) -> list[Action]:
        self.attempts += 1
        self.updated_ms = now_ms
        if self.attempts >= SEND_RETRIES:
            return []
        delay = RETRY_BASE_MS * 2 ** (self.attempts - 1)
        if self.state == "executed" and self.commit is not None:
            return [SendCommit(self.commit, delay)]
        if self.state == "failed" and self.withdraw is not None:
            return [SendWithdraw(self.withdraw, delay)]
        return []

    def reveal_asked(self, now_ms: int) -> list[Action]:
        """Answer a reveal request (already checked to come from the submitter)."""
        if self.state not in REVEALABLE or self.reveal is None:
            raise RemoteProtocolError("not_committed", "nothing committed to reveal")
        return self._to("revealed", now_ms, [AnswerReveal(self.reveal)])

    def crashed(self, reason: str, now_ms: int) -> list[Action]:
        if self.state == "ended":
            return []  # the job was over already: nothing to withdraw from, the reason stays
        if self.state in ("awarded", "running"):
            self.state = "running"
            return self.run_failed(reason, now_ms)
        self.reason = reason
        return self._to("failed", now_ms, [])

    def ended(self, reason: str, now_ms: int) -> list[Action]:
        """The job ended at its submitter: whatever this executor has not finished is abandoned.
        A run in progress (or awarded, not begun) is stopped; nothing is committed or revealed
        from here on (`ran`, `sent`, `unreachable` change nothing in state ended)."""
        if self.state not in UNFINISHED:
            return []
        stop = self.state in ("awarded", "running")
        self.reason = reason
        return self._to("ended", now_ms, [StopRun()] if stop else [])

    def resume(self, now_ms: int) -> list[Action]:
        """What a restarted node does again: run a job awarded but not run to its end, send a commit
        not yet accepted (afresh: the submitter may have been restarting too)."""
        if self.state in ("awarded", "running"):
            self.state = "awarded"
            return self.start(now_ms)
        if self.state == "executed" and self.commit is not None:
            self.attempts = 0
            return [SendCommit(self.commit)]
        return []

    def _to(self, state: str, now_ms: int, actions: list[Action]) -> list[Action]:
        self.state = state
        self.updated_ms = now_ms
        return actions


def apply_input(job: ExecutorJob, kind: str, raw: bytes, meta: dict, now_ms: int) -> list[Action]:
    """The one place that decides how a stored or live input is applied to a job."""
    if kind == "start":
        return job.start(now_ms)
    if kind == "ran":
        return job.ran(raw, now_ms)
    if kind == "run_failed":
        return job.run_failed(meta.get("reason", ""), now_ms)
    if kind == "sent":
        return job.sent(now_ms)
    if kind == "refused":
        return job.refused(meta.get("reason", ""), now_ms)
    if kind == "unreachable":
        return job.unreachable(now_ms)
    if kind == "reveal_asked":
        return job.reveal_asked(now_ms)
    if kind == "crashed":
        return job.crashed(meta.get("reason", ""), now_ms)
    if kind == "ended":
        return job.ended(meta.get("reason", ""), now_ms)
    raise ValueError(f"unknown executor input kind {kind!r}")


def ended_reason(status: str, reason: str = "") -> str:
    """Why a job ended for its executors, from its certificate's status ("verified",
    "nondeterministic", "failed") and reason: a cancel is a failed certificate with the reason
    "cancelled"."""
    if reason == "cancelled":
        return "cancelled by the submitter"
    if status == "failed":
        return "the job failed at its submitter"
    return f"verdict reached ({status})"


def replay(identity: Identity, award: Award, spec: JobSpec,
           inputs: list[tuple[str, bytes, dict, int]]) -> ExecutorJob:
    """The job rebuilt from its stored inputs (kind, raw, meta, time), in order, through
    `apply_input`, as the live job took them. A reveal request stored before a refusal (it raised)
    is never stored, so a replay raises nothing."""
    job = ExecutorJob(identity, award, spec)
    for kind, raw, meta, at in inputs:
        apply_input(job, kind, raw, meta, at)
    return job
