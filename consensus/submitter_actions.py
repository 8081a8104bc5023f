"""What `SubmitterJob` (submitter.py) asks its adapter to do, and the submitter's own timing.

The actions are plain data: the adapter (node/submitting.py, tools/simulation.py) carries them
out. Re-exported by submitter.py, where callers import them from.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tally import Tally

TERMINAL = ("verified", "failed", "nondeterministic")
# Slot states. An executor's slot is live while awarded/committed/revealed; every other value is
# the reason it ended without a usable result.
LIVE = ("awarded", "committed", "revealed")


@dataclass(frozen=True)
class Timing:
    """The submitter's own timing, not part of the spec. Each default has its reason."""

    bid_window_ms: int = 300      # bids arrive within a gossip round trip (~10 ms here); 300 ms lets slower peers in
    # A sampled job's bidders (consensus/sampling.py) are mostly peers the submitter is not connected
    # to: the announcement must cross the mesh (the simulator: ~320 ms to the eligible nodes of 10,000,
    # 50 ms links) and each bidder dials (2 round trips) before its bid. A shorter window widens
    # (doubling the bids) for bids that were already on their way.
    sampled_bid_window_ms: int = 1000
    # Bidding stays open up to this much longer for a peer that has not bid and outranks the bids in
    # hand: an established node's bid took 1-2 s among 20 starting processes on 2 cores. The cost:
    # a job whose best-reputed peer declines waits this long before its awards.
    bid_wait_reputation_ms: int = 3000
    bid_wait_ms: int = 15_000     # short of executors with no bid for this long: give up
    reveal_window_ms: int = 10_000  # a reveal is a stored answer; 10 s covers a busy peer


# Re-announcing a job short of bidders (gossip is best effort: a publish reaches the mesh of the
# moment). Each repeat costs every node a message and a check, and under load it is the bids
# that are slow, not the announcement: 50 processes on 2 cores re-announced 12 times a job at a
# fixed 1 s. So the interval doubles while the job stays short, and starts again once it is not.
REANNOUNCE_FIRST_MS = 1000  # about one gossip heartbeat: the mesh may have changed by then
REANNOUNCE_MAX_MS = 8000


def reannounce_after_ms(repeats: int) -> int:
    """The wait before the next re-announcement, after `repeats` in a row: 1 s, 2 s, 4 s, 8 s, 8 s..."""
    return min(REANNOUNCE_MAX_MS, REANNOUNCE_FIRST_MS << min(max(0, repeats), 8))


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
class Penalize:
    """An offence this submitter saw itself; it lowers `executor`'s reputation in its view only."""

    executor: bytes
    reason: str


@dataclass(frozen=True)
class WidenBids:
    """Too few acceptable bids: the job's eligible share is now `share` (sampling.widen, doubled).
    The adapter publishes a signed `messages.Widen(job_id, share, now)` as gossip, and from now on
    counts the peers eligible at this share in `unbid_best` and `undecided`."""

    share: int


@dataclass(frozen=True)
class Finished:
    status: str  # "verified" | "failed" | "nondeterministic"
    reason: str
    tally: Tally | None


Action = SendAward | RequestReveal | PublishCertificate | Penalize | WidenBids | Finished
