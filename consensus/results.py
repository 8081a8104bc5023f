"""Result hashes and commit seals: pure functions over canonical bytes.

- `result_hash` covers exactly what honest executors must agree on: exit code, whether the job timed
  out, stdout (as carried in the reveal, at most STDOUT_CAP bytes), whether stdout was truncated,
  how much the job wrote to stdout (`stdout_size`, -1 when not stated), stderr as carried in the
  reveal (at most STDERR_CAP bytes) and which part of it that is ("all", "first", "last"), the
  manifest of output files as (path, size, CID) sorted by path (the binary CIDv1 of the file as
  `ipfs add --cid-version 1` makes it, so the blocks a fetch verifies are bound to the result), and for a wasm job the fuel
  it used (-1 otherwise), so that agreeing executors also agree on what the job cost; and the
  outputs summary (`outputs.Outputs`: quota status, files found, skipped entries), so that a cut
  manifest, a skipped file or a quota end is part of what is certified.
- `batch_hash(task_hashes)` is a batch's result hash: each task is hashed as above (no manifest)
  and the list in task order is hashed again, so one seal commits to every task.
- `seal(executor, job_id, result_hash)` = H(executor || job_id || result_hash), as in iExec's proof of
  contribution: a copied seal names the wrong executor.
"""

from __future__ import annotations

from .codec import encode, sha256
from .outputs import NONE, ManifestEntry, Outputs


def result_hash(exit_code: int, timed_out: bool, stdout: bytes, stdout_truncated: bool,
                manifest: tuple[ManifestEntry, ...] = (), fuel_used: int = -1, outputs: Outputs = NONE, *,
                stderr: bytes = b"", stderr_part: str = "all", stdout_size: int = -1) -> bytes:
    """The hash of one result (a batch task's: no manifest, no stderr, no stdout size)."""
    entries = [[path, size, digest] for path, size, digest in sorted(manifest)]
    return sha256(b"distributeai/result/v4\x00"
                  + encode([exit_code, timed_out, stdout, stdout_truncated, entries, fuel_used, outputs.to_body(),
                            stderr, stderr_part, stdout_size]))


def batch_hash(task_hashes: list[bytes]) -> bytes:
    """The result hash of a batch: its task result hashes, in task order."""
    return sha256(b"distributeai/batch/v1\x00" + encode(list(task_hashes)))


def fuel_cost(fuel_used: int, price_per_mfuel: int) -> int:
    """Credits for `fuel_used` at `price_per_mfuel` credits per million, rounded up."""
    if fuel_used <= 0 or price_per_mfuel <= 0:
        return 0
    return -(-fuel_used * price_per_mfuel // 1_000_000)


def seal(executor: bytes, job_id: bytes, result_hash_: bytes) -> bytes:
    return sha256(b"distributeai/seal/v1\x00" + executor + job_id + result_hash_)
