"""From checked reveals to a verdict, for a single job and for a batch: pure functions.

The submitter (`submitter.py`) and every node checking a certificate (`certificate.py`) call the
same functions, so a certificate says exactly what its reveals support.

- A single job compared `exact` (the default): `tally.tally` over each executor's result hash.
- A single job compared `numeric` (`group_tally`): each result's group is the results agreeing
  with it (consensus/compare.py, `groups`; agreement within tolerance is not transitive, so groups
  may overlap). The leader is the result with the largest group, ties broken by the lowest
  result hash; with `top` its group's size and `second` the largest group of a result outside
  it, the verdict is final when top >= quorum and top > second + outstanding (the tally's
  rules). The certified result hash is the leader's, `agreeing` its group, `dissenting` the rest.
  Nondeterministic: two or more results and no two agree. Order independent: only sorted keys
  and hashes decide.
- A batch: each task is tallied on its own over the executors' task hashes, with the same rules
  (k agreeing and leading, given what is outstanding). The batch as a whole is `verified` when
  every task is; `pending` while some task is undecided and results are outstanding;
  `no_quorum` otherwise, though the tasks that did verify stay verified (see `task_tallies`).
  The batch's result hash is `results.batch_hash` of the winning task hashes; executors agreeing
  on every task are `agreeing` (rewarded and paid), every other voter `dissenting`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from .compare import groups
from .messages import JobSpec, Reveal
from .results import batch_hash
from .tally import Tally, tally


def task_votes(spec: JobSpec, reveals: Mapping[bytes, Reveal]) -> list[dict[bytes, bytes]]:
    """Per task of a batch: executor -> that task's result hash."""
    hashes = {e: r.task_hashes() for e, r in reveals.items()}
    return [{e: h[i] for e, h in hashes.items() if i < len(h)} for i in range(len(spec.tasks))]


def task_tallies(spec: JobSpec, reveals: Mapping[bytes, Reveal], outstanding: int = 0) -> list[Tally]:
    return [tally(v, spec.quorum, outstanding) for v in task_votes(spec, reveals)]


def job_tally(spec: JobSpec, reveals: Mapping[bytes, Reveal], outstanding: int = 0,
              quorum: int | None = None) -> Tally:
    """The verdict the reveals support. `quorum` overrides the spec's k (an adaptive job's mode:
    1 for a single run, 2 for a spot check; consensus/adaptive.py)."""
    if not spec.is_batch and spec.compare.kind != "exact":
        return group_tally(spec, reveals, quorum or spec.quorum, outstanding)
    if not spec.is_batch:
        return tally({e: r.result_hash for e, r in reveals.items()}, quorum or spec.quorum, outstanding)
    tallies = task_tallies(spec, reveals, outstanding)
    voters = tuple(sorted(reveals))
    if tallies and all(t.outcome == "verified" for t in tallies):
        agreeing = tuple(e for e in voters if all(e in t.agreeing for t in tallies))
        dissenting = tuple(e for e in voters if e not in agreeing)
        return Tally("verified", batch_hash([t.result_hash for t in tallies]), agreeing, dissenting)
    if outstanding > 0:
        return Tally("pending", None, (), voters)
    return Tally("no_quorum", None, (), voters)


def group_tally(spec: JobSpec, reveals: Mapping[bytes, Reveal], quorum: int, outstanding: int = 0) -> Tally:
    """The tally of a single job under its comparator (see the module docstring)."""
    if quorum < 1 or outstanding < 0:
        raise ValueError("quorum must be at least 1 and outstanding not negative")
    group = groups(spec.compare, reveals)
    voters = tuple(sorted(reveals))
    if not voters:
        return Tally("pending" if outstanding > 0 else "no_quorum", None, (), ())
    leader = min(voters, key=lambda e: (-len(group[e]), reveals[e].result_hash, e))
    agreeing = group[leader]
    top = len(agreeing)
    second = max((len(group[e]) for e in voters if e not in agreeing), default=0)
    if top >= quorum and top > second + outstanding:
        return Tally("verified", reveals[leader].result_hash, agreeing, tuple(e for e in voters if e not in agreeing))
    return Tally("pending" if outstanding > 0 else "no_quorum", None, (), voters)


def nondeterministic(spec: JobSpec, reveals: Mapping[bytes, Reveal]) -> bool:
    """At least two results and no two alike (under the spec's comparator): for a batch, true of
    some task."""
    if not spec.is_batch and spec.compare.kind != "exact":
        return len(reveals) >= 2 and all(len(g) == 1 for g in groups(spec.compare, reveals).values())
    if not spec.is_batch:
        return _all_differ({e: r.result_hash for e, r in reveals.items()})
    return any(_all_differ(v) for v in task_votes(spec, reveals))


def top_agreement(spec: JobSpec, reveals: Mapping[bytes, Reveal]) -> int:
    """The most executors agreeing on one result (under the spec's comparator: the largest group);
    for a batch, on its least settled task."""
    if not spec.is_batch and spec.compare.kind != "exact":
        return max((len(g) for g in groups(spec.compare, reveals).values()), default=0)
    if not spec.is_batch:
        return _top({e: r.result_hash for e, r in reveals.items()})
    votes = task_votes(spec, reveals)
    return min((_top(v) for v in votes), default=0)


def _all_differ(votes: Mapping[bytes, bytes]) -> bool:
    return len(votes) >= 2 and len(set(votes.values())) == len(votes)


def _top(votes: Mapping[bytes, bytes]) -> int:
    return max(Counter(votes.values()).values(), default=0)
