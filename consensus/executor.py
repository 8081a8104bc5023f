"""The executor's side of a result as pure functions: the signed reveal of one run and the signed
commit that binds it to this executor before anything is revealed.

node/executing.py calls these with what the sandbox returned; tools/simulation.py calls them with
a modelled run, so both sign exactly the same messages.
"""

from __future__ import annotations

from typing import Iterable

from .codec import Identity
import dataclasses

from .messages import MANIFEST_MAX_ENTRIES, STDOUT_CAP, Commit, Reveal, sign, task_stdout_cap
from .outputs import OUT_QUOTA_EXCEEDED, Outputs
from .results import ManifestEntry, result_hash, seal


def make_reveal(identity: Identity, job_id: bytes, exit_code: int, timed_out: bool, stdout: bytes,
                stdout_truncated: bool = False, manifest: Iterable[ManifestEntry] = (), fuel_used: int | None = None,
                oom_killed: bool = False, sandbox: str = "", outputs: Outputs | None = None) -> bytes:
    """The signed reveal of a run's output. Stdout is cut to STDOUT_CAP (and marked truncated);
    `manifest` and `outputs` are as `outputs.describe_outputs` made them (None: `manifest` is a
    plain list of files with good names, summarised here); a result over the output quota is
    only that (exit code -1, no stdout, no files), so every honest executor signs the same
    thing; `fuel_used` None (not a wasm job) is -1 on the wire."""
    if outputs is None:
        listed = tuple(sorted(manifest))
        kept, outputs = listed[:MANIFEST_MAX_ENTRIES], Outputs(files=len(listed))
    else:
        kept = tuple(sorted(manifest))
    if outputs.status == OUT_QUOTA_EXCEEDED:
        exit_code, timed_out, stdout, stdout_truncated, kept = -1, False, b"", False, ()
    out = stdout[:STDOUT_CAP]
    truncated = stdout_truncated or len(stdout) > STDOUT_CAP
    fuel = fuel_used if fuel_used is not None else -1
    rh = result_hash(exit_code, timed_out, out, truncated, kept, fuel, outputs)
    return sign(identity, Reveal(job_id, identity.public_key, rh, exit_code, out, truncated, timed_out, kept,
                                 fuel, oom_killed, sandbox, (), outputs))


def make_batch_reveal(identity: Identity, job_id: bytes, n_tasks: int,
                      runs: Iterable[tuple[int, bool, bytes, bool, int | None]], oom_killed: bool = False,
                      sandbox: str = "") -> bytes:
    """The signed reveal of a batch: per task (exit code, timed out, stdout, truncated, fuel), stdout
    cut at `task_stdout_cap(n_tasks)` so every honest executor cuts at the same place and the
    reveal fits its cap; the result hash is `batch_hash` of the task hashes. No output files."""
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
