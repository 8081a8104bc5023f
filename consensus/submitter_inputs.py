"""How one input is applied to a `SubmitterJob` (submitter.py), for the live node and for a
replay alike: `apply_input`, and `decode_input` for a stored input's bytes. Re-exported by
submitter.py, where callers import them from.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .codec import Identity
from .messages import Bid, Commit, Decline, JobSpec, Reveal, Signed, Withdraw, verify
from .sampling import SHARE_ALL
from .submitter_actions import Action, Timing

if TYPE_CHECKING:
    from .submitter import SubmitterJob

INPUT_TYPES = {"bid": Bid, "decline": Decline, "commit": Commit, "withdraw": Withdraw, "reveal": Reveal}


def decode_input(kind: str, raw: bytes) -> Signed | bytes:
    """A stored input's payload as `apply_input` takes it: the verified message for a message
    kind, the raw bytes otherwise (an undelivered award's executor; empty for a tick or cancel)."""
    return verify(raw, INPUT_TYPES[kind]) if kind in INPUT_TYPES else raw


def apply_input(job: "SubmitterJob", kind: str, payload: Signed | bytes, meta: dict, now_ms: int) -> list[Action]:
    """The one place that decides how an input is applied to a job, for the live node and for a
    replay alike. `meta` is what the adapter recorded with it (a bid's reputation, early-close bound
    `unbid_best` and address range; a tick's `unbid_best`; for both, in a sampled job, `outside_best`,
    the best reputation of a connected peer outside the sample; a bid's `trust`, its bidder's CV in
    the job's runtime class (adaptive jobs); every input's `undecided`, the peers
    that had neither bid nor declined then, which decides whether a quorum is still in reach).
    `unbid_best` and `undecided` count only the connected peers eligible at the job's share then
    (`sampling.eligible`): no other peer may bid."""
    job.undecided = meta.get("undecided")
    if kind == "bid":
        return job.receive_bid(payload, now_ms, meta.get("reputation", 0), meta.get("unbid_best"),
                               meta.get("subnet"), meta.get("outside_best"), meta.get("trust", 0))
    if kind == "decline":
        return job.receive_decline(payload, now_ms, meta.get("unbid_best"))
    if kind == "commit":
        return job.receive_commit(payload, now_ms)
    if kind == "withdraw":
        return job.receive_withdraw(payload, now_ms)
    if kind == "reveal":
        return job.receive_reveal(payload, now_ms)
    if kind == "undelivered":
        return job.award_undelivered(payload, now_ms)
    if kind == "cancel":
        return job.cancel(now_ms)
    if kind == "tick":
        return job.tick(now_ms, meta.get("unbid_best"), meta.get("outside_best"))
    raise ValueError(f"unknown input kind {kind!r}")


def replay(identity: Identity, timing: Timing, inputs: list[tuple[str, bytes, dict, int]]) -> "SubmitterJob | None":
    """A job rebuilt from its stored inputs (`Store.inputs`: kind, raw, meta, time), in order,
    through `apply_input`: the same job, awards and all, as the one that took them live. None if
    the inputs hold no start."""
    from .submitter import SubmitterJob

    job: SubmitterJob | None = None
    for kind, raw, meta, at in inputs:
        if kind == "start":  # meta["share"]: the announcement's (a widening is re-derived from the ticks)
            job = SubmitterJob(identity, raw, verify(raw, JobSpec).msg, started_ms=at, timing=timing,
                               share=meta.get("share", SHARE_ALL))
        elif job is not None:
            apply_input(job, kind, decode_input(kind, raw), meta, at)
    return job
