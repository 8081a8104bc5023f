"""Why nobody (or too few) ran a job, in one line for people, from the signed declines.

`failure_reason(spec, declines, bids, what)` is the reason a submitter writes into a failed job's
certificate: what went wrong, then the declines counted by kind, most common first, e.g.
"no bids: 3 nodes lack image python:3.9-slim, 1 node is busy". Pure, and the one place that
words a decline code, so the CLI, the REST API and the page say the same thing.

Who declines: only a node eligible for the job (consensus/sampling.py, at the job's current
share) that will not bid. A node outside the sample sends nothing, neither bid nor decline (the
submitter refuses both as `not_eligible`), so declines count only the sampled nodes.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from .fields import CERT_REASON_MAX, DECLINE_CODES
from .outputs import escape_name
from .spec import JobSpec
from .units import human_bytes

# Each code as "N node(s) ..." reads: singular form, plural form.
_PHRASES = {
    "image_missing": ("lacks image {image}", "lack image {image}"),
    "not_enough_memory": ("has less memory than the job's {memory} MiB", "have less memory than the job's {memory} MiB"),
    "not_enough_cpu": ("has fewer CPUs than the job's {cpu}", "have fewer CPUs than the job's {cpu}"),
    "busy": ("is busy", "are busy"),
    "no_gpu": ("has no GPU", "have no GPU"),
    "no_sandbox": ("has no working {sandbox} sandbox", "have no working {sandbox} sandbox"),
    "disk_low": ("is low on disk", "are low on disk"),
    "output_too_large": ("cannot hold the job's output quota", "cannot hold the job's output quota"),
    "submitter_cannot_pay": ("sees the submitter short of credits", "see the submitter short of credits"),
    "inputs_too_large": ("lacks room for the inputs ({inputs})", "lack room for the inputs ({inputs})"),
}
assert set(_PHRASES) == set(DECLINE_CODES)


def nodes(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


def describe_code(code: str, n: int, spec: JobSpec) -> str:
    """"3 nodes lack image alpine:3" for `n` declines of `code`."""
    one, many = _PHRASES.get(code, ("declined", "declined"))
    text = (one if n == 1 else many).format(image=escape_name(spec.image or "?"), memory=spec.memory_mb,
                                            cpu=f"{spec.cpu_millis / 1000:g}", sandbox=spec.sandbox,
                                            inputs=human_bytes(spec.inputs_size))
    return f"{nodes(n)} {text}"


def count_codes(codes: Iterable[str]) -> list[tuple[str, int]]:
    """The codes counted, most common first (ties in DECLINE_CODES order)."""
    counts = Counter(codes)
    order = {c: i for i, c in enumerate(DECLINE_CODES)}
    return sorted(counts.items(), key=lambda kv: (-kv[1], order.get(kv[0], len(order))))


def summary(spec: JobSpec, codes: Iterable[str]) -> str:
    """The declines counted by kind: "3 nodes lack image X, 1 node is busy" ("" for none)."""
    return ", ".join(describe_code(code, n, spec) for code, n in count_codes(codes))


def failure_reason(spec: JobSpec, codes: Iterable[str], bids: int, what: str = "", undecided: int = 0) -> str:
    """Why a job ends without a verdict for want of executors. `what` is the fact (e.g. "no bidders
    left to replace failed executors"); without one it is worded from the bids: "no bids" or "only
    2 nodes bid, the quorum needs 3". The declines follow, counted by kind, and the connected
    nodes that had not answered when the job could no longer reach its quorum. At most
    CERT_REASON_MAX characters of printable ASCII."""
    if not what:
        what = "no bids" if bids == 0 else f"only {nodes(bids)} bid, the quorum needs {spec.quorum}"
    said = ", ".join(filter(None, [summary(spec, codes),
                                   f"{nodes(undecided)} had not answered" if undecided > 0 else ""]))
    if not said and bids == 0 and what == "no bids":
        said = "no node offered to run this job"
    text = f"{what}: {said}" if said else what
    return text if len(text) <= CERT_REASON_MAX else text[:CERT_REASON_MAX - 3] + "..."
