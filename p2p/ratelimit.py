"""Per-peer rate limits: token buckets keyed by peer (and protocol), pure, with time passed in.

A bucket holds up to `burst` tokens and gains `rate` tokens a second; each message takes one, and a
message that finds the bucket empty is refused. So a peer may send `burst` messages at once and
`rate` a second for ever after; a flood at any higher rate is cut to `rate`.

`KeyedLimiter` keeps one bucket per key (a peer id, or a peer id and a protocol) and stays bounded:
past `max_keys` it forgets buckets that have refilled (a full bucket is the same as a new one), and
if every bucket is still in use, keys it has no bucket for share one overflow bucket. Nothing here
reads a clock or does I/O; the overlay passes `trio.current_time()`.

The defaults (`RateLimits`) are what an honest node never reaches; each says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

# `distributeai bench --nodes 5 --jobs 50 --concurrency 5 --sandbox process` reaches about
# 15 jobs/s on 2 cores, all work of the CPU; one submitter at that rate is the most any honest
# peer sends: per job one announcement and one certificate (gossip, so 30 messages/s of one
# author), one bid and one commit from each executor, one award and one reveal request to each.
# The limits sit above that (and a 2 s burst above them): an honest peer is never refused, and a
# flooder gets through little more than an honest submitter at full speed would, a twentieth of a
# 1,000/s flood. Higher limits let more of a flood through: each announcement that passes is
# stored and bid on by every node, the dearest thing a peer can make a node do.
REQUEST_RATE = 50.0  # requests/s per peer and protocol (bench peak: 15 bids/s to one submitter)
GOSSIP_AUTHOR_RATE = 50.0  # messages/s per established author (bench peak: 30, plus re-announces)
# An author the node knows nothing of (no verified job, no reputation: see Overlay.set_standing)
# gets far less. Measured (tests/test_flood.py, 2 cores shared with other loads): with 50/s let
# through to every node, a 1,000/s announcement flood from a fresh key slowed an honest job 11 to
# 15 times (each announcement costs every node ~3-5 ms: signature, relay, store, a bid); 4.9
# times at 20/s, 3.3 at 10/s; at 5/s 1.4 to 2 times. A newcomer's first job needs 2 messages (announcement, certificate) and re-announces;
# 5/s with a 2 s burst lets a new node start at full speed and become established at once.
NEWCOMER_GOSSIP_RATE = 5.0
# A forwarding peer relays every author's messages, so it gets the allowance of two busy
# authors (3 times the whole bench network's 30 messages/s); it is checked before the
# signature, so it bounds the CPU a peer can make us spend on signature checks whoever it
# claims wrote them. Not by standing: bootstraps and idle nodes relay without ever having a job.
FORWARDER_AUTHORS = 2
GOSSIP_FORWARDER_RATE = FORWARDER_AUTHORS * GOSSIP_AUTHOR_RATE
# A burst of 2 s worth: jobs submitted in a batch by a script arrive together.
BURST_SECONDS = 2.0
# Buckets kept before idle ones are forgotten (a few hundred bytes each).
MAX_KEYS = 10_000


@dataclass(frozen=True)
class RateLimits:
    """The overlay's per-peer limits, in messages a second; 0 turns one off. Bursts are
    `BURST_SECONDS` worth of each rate."""

    request_rate: float = REQUEST_RATE
    gossip_author_rate: float = GOSSIP_AUTHOR_RATE
    gossip_forwarder_rate: float = GOSSIP_FORWARDER_RATE
    newcomer_gossip_rate: float = NEWCOMER_GOSSIP_RATE

    @classmethod
    def of(cls, request_rate: float, gossip_rate: float, newcomer_gossip_rate: float) -> "RateLimits":
        """The limits from the settings a volunteer sees (`request_rate_limit`,
        `gossip_rate_limit`, `newcomer_gossip_rate_limit`): a forwarder gets FORWARDER_AUTHORS
        authors' worth."""
        return cls(request_rate, gossip_rate, FORWARDER_AUTHORS * gossip_rate, newcomer_gossip_rate)

    def __post_init__(self) -> None:
        for name in ("request_rate", "gossip_author_rate", "gossip_forwarder_rate", "newcomer_gossip_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name} must be a number of messages a second, at least 0; got {value!r}")


class KeyedLimiter:
    """One token bucket per key. `allow(key, now)` takes a token from key's bucket: True if there
    was one. `now` is in seconds from any fixed origin and must not go backwards by much (a step
    back is treated as no time passing). rate 0: every call is allowed."""

    def __init__(self, rate: float, burst: float | None = None, *, max_keys: int = MAX_KEYS) -> None:
        if rate < 0:
            raise ValueError("rate must be at least 0")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate * BURST_SECONDS))
        if self.burst < 1:
            raise ValueError("burst must be at least 1 (else nothing ever passes)")
        self.max_keys = max_keys
        self._buckets: dict[Hashable, list[float]] = {}  # key -> [tokens, last update]
        self._overflow: list[float] | None = None

    def allow(self, key: Hashable, now: float) -> bool:
        if self.rate == 0:
            return True
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            if len(self._buckets) >= self.max_keys:
                if self._overflow is None:
                    self._overflow = [self.burst, now]
                bucket = self._overflow
            else:
                bucket = self._buckets[key] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate)
        bucket[1] = max(bucket[1], now)
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled by `now`: a new bucket would be the same."""
        full = [k for k, (tokens, last) in self._buckets.items()
                if tokens + max(0.0, now - last) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
