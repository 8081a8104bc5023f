"""The executor's side of a result as pure functions: the signed reveal of one run and the signed
commit that binds it to this executor before anything is revealed.

node/executing.py calls these with what the sandbox returned; tools/simulation.py calls them with
a modelled run, so both sign exactly the same messages.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import dataclasses

from .codec import Identity
from .compare import EXACT, Compare, carried_files
from .messages import (
    MANIFEST_MAX_ENTRIES, STDERR_CAP, STDOUT_CAP, STDOUT_SEEN_MAX, Commit, Reveal, sign, task_stdout_cap,
)
from .outputs import OUT_QUOTA_EXCEEDED, Outputs
from .results import ManifestEntry, result_hash, seal


def certified_stderr(stderr: bytes, sandbox_truncated: bool, timed_out: bool) -> tuple[bytes, str]:
    """The part of a run's stderr a reveal carries, and which part it is: all of it when it fits
    STDERR_CAP; else its last STDERR_CAP bytes ("last": where a failing program writes why);
    but its first ones ("first") when the run was stopped at its timeout (where the kill landed
    differs between executors, what the job wrote first does not) or when the sandbox kept only
    the beginning of it (`sandbox_truncated`: its end was never seen)."""
    if len(stderr) <= STDERR_CAP and not sandbox_truncated:
        return stderr, "all"
    if timed_out or sandbox_truncated:
        return stderr[:STDERR_CAP], "first"
    return stderr[-STDERR_CAP:], "last"


def stdout_size(stdout: bytes, sandbox_truncated: bool, timed_out: bool) -> int:
    """How much the job wrote to stdout, as a reveal states it: the count up to STDOUT_SEEN_MAX
    (the sandbox keeps that much), STDOUT_SEEN_MAX + 1 for more (`sandbox_truncated`: it wrote
    more than it kept); -1 (not stated) for a run stopped at its timeout, whose amount depends on
    when the kill landed, so that executors agreeing on its first bytes still agree."""
    if timed_out:
        return -1
    return STDOUT_SEEN_MAX + 1 if sandbox_truncated else min(len(stdout), STDOUT_SEEN_MAX + 1)


def make_reveal(identity: Identity, job_id: bytes, exit_code: int, timed_out: bool, stdout: bytes,
                stdout_truncated: bool = False, manifest: Iterable[ManifestEntry] = (), fuel_used: int | None = None,
                oom_killed: bool = False, sandbox: str = "", outputs: Outputs | None = None, *,
                stderr: bytes = b"", stderr_truncated: bool = False, compare: Compare = EXACT,
                contents: Mapping[str, bytes] | None = None) -> bytes:
    """The signed reveal of a run's output, from what the sandbox kept (`stdout_truncated`,
    `stderr_truncated`: it kept only the first bytes). Stdout is cut to STDOUT_CAP (and marked
    truncated) and its size stated (`stdout_size`); stderr is cut by `certified_stderr`;
    `manifest` and `outputs` are as `outputs.describe_outputs` made them (None: `manifest` is a
    plain list of files with good names, summarised here); a result over the output quota is
    only that (exit code -1, no stdout, stderr or files), so every honest executor signs the same
    thing; `fuel_used` None (not a wasm job) is -1 on the wire. Under a numeric `compare` the
    reveal carries the named files' bytes (`contents`: path -> bytes as read from the run's /out)
    that `compare.carried_files` allows."""
    if outputs is None:
        listed = tuple(sorted(manifest))
        kept, outputs = listed[:MANIFEST_MAX_ENTRIES], Outputs(files=len(listed))
    else:
        kept = tuple(sorted(manifest))
    size = stdout_size(stdout, stdout_truncated, timed_out)
    err, part = certified_stderr(stderr, stderr_truncated, timed_out)
    if outputs.status == OUT_QUOTA_EXCEEDED:
        exit_code, timed_out, stdout, stdout_truncated, kept = -1, False, b"", False, ()
        size, err, part = -1, b"", "all"
    out = stdout[:STDOUT_CAP]
    truncated = stdout_truncated or len(stdout) > STDOUT_CAP
    fuel = fuel_used if fuel_used is not None else -1
    rh = result_hash(exit_code, timed_out, out, truncated, kept, fuel, outputs,
                     stderr=err, stderr_part=part, stdout_size=size)
    carried = carried_files(compare, kept, contents or {})
    return sign(identity, Reveal(job_id, identity.public_key, rh, exit_code, out, truncated, timed_out, kept,
                                 fuel, oom_killed, sandbox, (), outputs, err, part, size, carried))


def make_batch_reveal(identity: Identity, job_id: bytes, n_tasks: int,
                      runs: Iterable[tuple[int, bool, bytes, bool, int | None]], oom_killed: bool = False,
                      sandbox: str = "") -> bytes:
    """The signed reveal of a batch: per task (exit code, timed out, stdout, truncated, fuel), stdout
    cut at `task_stdout_cap(n_tasks)` so every honest executor cuts at the same place and the
    reveal fits its cap; the result hash is `batch_hash` of the task hashes. No output files, no
    stderr and no stdout size (the reveal's own fields keep their defaults)."""
    cap = task_stdout_cap(n_tasks)
    tasks = tuple((code, timed_out, out[:cap], trunc or len(out) > cap, fuel if fuel is not None else -1)
                  for code, timed_out, out, trunc, fuel in runs)
    draft = Reveal(job_id, identity.public_key, b"", 0, b"", False, False, (), -1, oom_killed, sandbox, tasks)
    return sign(identity, dataclasses.replace(draft, result_hash=draft.expected_hash()))


def make_commit(identity: Identity, job_id: bytes, result_hash_: bytes) -> bytes:
    """The signed commit of a result: its seal H(executor || job_id || result_hash) names this
    executor, so a copied commit is worthless."""
    me = identity.public_key
    return sign(identity, Commit(job_id, me, seal(me, job_id, result_hash_)))
