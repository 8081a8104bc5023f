"""The k-of-n tally: a pure function over already-verified votes.

Signature and seal checks happen earlier (`messages.verify`, `submitter`); the tally only counts.

Rules:
- A result is `verified` when one result hash has at least `quorum` votes and strictly more votes
  than any other hash. (With quorum > n/2 two hashes can never both reach quorum; with a smaller
  quorum a tie between two hashes is not a verdict.)
- While votes are `outstanding`, a verdict that those votes could still change is `pending`.
  Once nothing is outstanding, anything short of a verdict is `no_quorum`.
- `agreeing` are the executors with the winning hash, `dissenting` every other voter; both are
  sorted, so the result does not depend on the order votes arrived in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Tally:
    outcome: str  # "verified" | "pending" | "no_quorum"
    result_hash: bytes | None
    agreeing: tuple[bytes, ...]
    dissenting: tuple[bytes, ...]


def tally(votes: Mapping[bytes, bytes], quorum: int, outstanding: int = 0) -> Tally:
    """`votes` maps executor id -> result hash; `outstanding` counts executors yet to vote."""
    if quorum < 1:
        raise ValueError("quorum must be at least 1")
    if outstanding < 0:
        raise ValueError("outstanding must not be negative")
    counts = Counter(votes.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top_hash, top = ranked[0] if ranked else (None, 0)
    second = ranked[1][1] if len(ranked) > 1 else 0
    leader_final = top >= quorum and top > second + outstanding
    if leader_final:
        agreeing = tuple(sorted(e for e, h in votes.items() if h == top_hash))
        dissenting = tuple(sorted(e for e, h in votes.items() if h != top_hash))
        return Tally("verified", top_hash, agreeing, dissenting)
    if outstanding > 0:
        return Tally("pending", None, (), tuple(sorted(votes)))
    return Tally("no_quorum", None, (), tuple(sorted(votes)))
