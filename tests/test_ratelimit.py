"""p2p/ratelimit.py: token buckets on numbers, time passed in (no clock, no network)."""

from __future__ import annotations

import pytest

from distributeai.p2p.ratelimit import BURST_SECONDS, KeyedLimiter, RateLimits


def passed(limiter: KeyedLimiter, key: object, times: list[float]) -> int:
    return sum(limiter.allow(key, t) for t in times)


def test_a_burst_passes_then_the_rate() -> None:
    limiter = KeyedLimiter(rate=10, burst=5)
    assert passed(limiter, "p", [0.0] * 8) == 5  # the burst, no more at one instant
    assert not limiter.allow("p", 0.05)  # half a token earned
    assert limiter.allow("p", 0.1)  # one token earned after 1/rate s
    assert not limiter.allow("p", 0.1)


def test_a_flood_is_cut_to_the_rate_plus_the_burst() -> None:
    limiter = KeyedLimiter(rate=50, burst=100)
    flood = [i / 1000 for i in range(5000)]  # 1,000 a second for 5 s
    got = passed(limiter, "flooder", flood)
    assert 100 + 50 * 4.999 - 1 <= got <= 100 + 50 * 5  # burst + rate x duration
    # An honest peer at the same time, at 15/s, is never refused: buckets are per key.
    assert passed(limiter, "honest", [i / 15 for i in range(75)]) == 75


def test_an_honest_rate_below_the_limit_is_never_refused() -> None:
    limiter = KeyedLimiter(rate=50)
    assert limiter.burst == 50 * BURST_SECONDS
    assert passed(limiter, "p", [i / 49 for i in range(49 * 60)]) == 49 * 60


def test_tokens_do_not_pile_up_beyond_the_burst() -> None:
    limiter = KeyedLimiter(rate=10, burst=3)
    assert passed(limiter, "p", [0.0] * 3) == 3
    assert passed(limiter, "p", [1000.0] * 10) == 3  # a long pause earns only the burst


def test_time_going_backwards_earns_nothing() -> None:
    limiter = KeyedLimiter(rate=8, burst=1)  # binary fractions: exact sums
    assert limiter.allow("p", 5.0)
    assert not limiter.allow("p", 4.0)
    assert not limiter.allow("p", 5.0625)
    assert limiter.allow("p", 5.125)


def test_rate_zero_turns_the_limit_off() -> None:
    limiter = KeyedLimiter(rate=0)
    assert passed(limiter, "p", [0.0] * 10_000) == 10_000
    assert len(limiter) == 0


def test_keys_stay_bounded_and_refilled_buckets_are_forgotten() -> None:
    limiter = KeyedLimiter(rate=1, burst=2, max_keys=100)
    for k in range(100):
        assert limiter.allow(k, 0.0)
    # All 100 buckets are in use: new keys share one overflow bucket (burst 2).
    assert passed(limiter, "new", [0.0]) + passed(limiter, "other", [0.0, 0.0]) == 2
    assert len(limiter) == 100
    # 1 s later every bucket has refilled (1 token used, rate 1): they are forgotten, and a new
    # key gets a bucket of its own again.
    assert limiter.allow("fresh", 1.0)
    assert len(limiter) == 1
    # A forgotten key starts with a full bucket, exactly as if it had been kept.
    assert passed(limiter, 7, [1.0] * 3) == 2


def test_settings_are_checked() -> None:
    assert RateLimits().request_rate > 15  # above the bench's honest peak
    with pytest.raises(ValueError, match="request_rate"):
        RateLimits(request_rate=-1)
    with pytest.raises(ValueError, match="gossip_author_rate"):
        RateLimits(gossip_author_rate=True)
    with pytest.raises(ValueError):
        KeyedLimiter(rate=10, burst=0.5)


# --- p2p/fairqueue.py ---------------------------------------------------------------------------

from distributeai.p2p.fairqueue import FairQueue  # noqa: E402


def test_fair_queue_serves_keys_in_turn() -> None:
    q: FairQueue[str] = FairQueue(max_total=1000, max_per_key=500)
    for i in range(300):
        assert q.put("flooder", f"f{i}")
    assert q.put("honest", "h0")
    # The honest message comes out second, not after the flooder's backlog of 300.
    assert [q.get(), q.get(), q.get()] == ["f0", "h0", "f1"]
    assert len(q) == 298
    assert all(q.get() == f"f{i}" for i in range(2, 300))
    with pytest.raises(IndexError):
        q.get()


def test_fair_queue_is_bounded_per_key_and_in_all() -> None:
    q: FairQueue[int] = FairQueue(max_total=10, max_per_key=4)
    assert [q.put("a", i) for i in range(6)] == [True] * 4 + [False] * 2  # one key cannot fill it
    assert all(q.put(k, 0) for k in "bcdef") and len(q) == 9
    assert q.put("g", 0) and not q.put("h", 0)  # full in all
    q.get()
    assert q.put("h", 0)
    with pytest.raises(ValueError):
        FairQueue(max_total=3, max_per_key=4)
