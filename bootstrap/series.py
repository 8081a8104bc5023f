"""The last hour, minute by minute: jobs announced and certified (by status) and time to verdict
(from the bootstrap seeing a job's announcement to it seeing the certificate). Pure: times passed
in, as wall-clock seconds. Memory is bounded: HOUR_MINUTES buckets, each keeping at most
SAMPLES_PER_MINUTE durations (its maximum is kept exactly).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

HOUR_MINUTES = 60
SAMPLES_PER_MINUTE = 256
STATUSES = ("verified", "failed", "nondeterministic")


@dataclass
class _Minute:
    announced: int = 0
    certified: dict[str, int] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    longest: float | None = None


class Series:
    def __init__(self) -> None:
        self.minutes: dict[int, _Minute] = {}  # minute number (wall seconds // 60) -> its counts

    def _bucket(self, now: float) -> _Minute:
        minute = int(now // 60)
        for old in [m for m in self.minutes if m <= minute - HOUR_MINUTES]:
            del self.minutes[old]
        return self.minutes.setdefault(minute, _Minute())

    def announced(self, now: float) -> None:
        self._bucket(now).announced += 1

    def certified(self, status: str, now: float, verdict_s: float | None) -> None:
        """A certificate of `status` seen at `now`, `verdict_s` after its announcement (None: the
        announcement was not seen here)."""
        b = self._bucket(now)
        b.certified[status] = b.certified.get(status, 0) + 1
        if verdict_s is not None:
            verdict_s = max(0.0, verdict_s)
            if len(b.durations) < SAMPLES_PER_MINUTE:
                b.durations.append(verdict_s)
            b.longest = verdict_s if b.longest is None else max(b.longest, verdict_s)

    def snapshot(self, now: float) -> dict:
        """HOUR_MINUTES values per series, oldest minute first, the last one the current minute;
        `start` is the first minute's start (wall seconds). A minute without a verdict has None
        for its p50 and max."""
        last = int(now // 60)
        first = last - HOUR_MINUTES + 1
        out: dict = {"start": first * 60, "step_s": 60, "announced": [],
                     **{s: [] for s in STATUSES}, "verdict_p50_s": [], "verdict_max_s": []}
        for minute in range(first, last + 1):
            b = self.minutes.get(minute) or _Minute()
            out["announced"].append(b.announced)
            for s in STATUSES:
                out[s].append(b.certified.get(s, 0))
            out["verdict_p50_s"].append(round(statistics.median(b.durations), 3) if b.durations else None)
            out["verdict_max_s"].append(round(b.longest, 3) if b.longest is not None else None)
        return out
