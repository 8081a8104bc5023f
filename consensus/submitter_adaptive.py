"""The adaptive part of `SubmitterJob` (submitter.py): which mode a job runs in, the spot-check
draw, escalation. Pure functions over the job; the rules are consensus/adaptive.py's.

Modes (`SubmitterJob.mode`), and the (n, k) each runs with (`policy`):
- None: still bidding (an adaptive job decides at bid close);
- "single" (1, 1): the best-ranked bidder is trusted (its CV, passed in with its bid, is at least
  the spec's `trust_threshold`) and was awarded alone;
- "checking" (2, 2): its commit drew a spot check; the next-best bidder runs it too;
- "replicated" (the spec's n, k): a replicate job, an adaptive job whose best bidder is not
  trusted, a spot check that disagreed (escalated, as BOINC raises a suspicious result to
  `target_nresults`), or a trusted executor that failed.

The trusted executor's reveal is asked for as soon as it commits, check or not, so the timing of
the request tells it nothing about the draw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .adaptive import Evidence, check_probability, mode_of, mode_quorum, sign_draw, spot_check

if TYPE_CHECKING:
    from .submitter import SubmitterJob


def policy(job: "SubmitterJob") -> tuple[int, int]:
    """(n, k): the executors the job wants live and the agreeing results a verdict needs now."""
    if job.mode == "single":
        return 1, 1
    if job.mode == "checking":
        return 2, 2
    return job.spec.replicas, job.spec.quorum


def decide(job: "SubmitterJob", now_ms: int) -> None:
    """At bid close: a replicate job, or an adaptive job whose best-ranked bidder is not trusted,
    is replicated; an adaptive job whose best-ranked bidder is trusted runs on it alone."""
    if job.mode is not None:
        return
    candidates = [e for e in job.bids if e not in job.awards]
    if job.spec.verification != "adaptive" or not candidates:
        job.mode = "replicated"
        return
    best = min(candidates, key=lambda e: job.rank[e])
    cv, threshold = job.trust.get(best, 0), job.spec.trust_threshold
    if cv >= threshold:
        job.mode, job.trusted, job.trust_cv = "single", best, cv
        job.history.append((now_ms, "trusted", best, f"CV {cv} >= {threshold}: runs alone, spot-checked with "
                            f"probability {check_probability(cv, job.spec.spot_check_floor_ppm):.3g}"))
    else:
        job.mode = "replicated"
        job.history.append((now_ms, "replicating", best, f"best bidder's CV {cv} < {threshold}"))


def on_commit(job: "SubmitterJob", executor: bytes, seal: bytes, now_ms: int) -> None:
    """The trusted executor committed: draw the spot check over its seal. A check awards the
    next-best bidder too; either way its reveal is asked for at once (the commit phase closes)."""
    if job.mode != "single" or executor != job.trusted or job.draw is not None:
        return
    job.draw = sign_draw(job.identity, job.job_id, seal)
    job.drawn = spot_check(job.draw, job.trust_cv, job.spec.spot_check_floor_ppm)
    job.history.append((now_ms, "spot_check", executor, "drawn" if job.drawn else "not drawn"))
    if job.drawn:
        job.mode = "checking"
    job.commit_closed = True


def on_error(job: "SubmitterJob", executor: bytes, now_ms: int) -> None:
    """The trusted executor failed (withdrew, timed out, broke its seal): replicate fully."""
    if executor == job.trusted and job.mode in ("single", "checking"):
        job.mode = "replicated"
        job.history.append((now_ms, "escalated", executor, "the trusted executor failed: k-of-n"))


def escalate(job: "SubmitterJob", outcome: str, outstanding: int, now_ms: int) -> bool:
    """A spot check whose two results disagree escalates to the spec's k-of-n. True: escalated."""
    if job.mode != "checking" or outcome != "no_quorum" or outstanding:
        return False
    job.mode = "replicated"
    job.history.append((now_ms, "escalated", job.trusted or b"", "the spot check disagreed: k-of-n"))
    return True


def final_quorum(job: "SubmitterJob") -> int:
    """The agreeing results the certificate's verdict needs, as every node will derive it."""
    return mode_quorum(mode_of(job.drawn, job.trusted, set(job.reveals)), job.spec)


def evidence(job: "SubmitterJob") -> Evidence | None:
    """What the certificate carries so every node can re-derive the draw (None: no draw made)."""
    if job.draw is None or job.trusted not in job.commits:
        return None
    return Evidence(job.trust_cv, job.draw, job.commits[job.trusted].raw)
