"""Result hashes and commit seals: pure functions over canonical bytes.

- `result_hash` covers exactly what honest executors must agree on: exit code, whether the job timed
  out, stdout (as carried in the reveal, at most STDOUT_CAP bytes), whether stdout was truncated, and
  the manifest of output files as (path, size, sha256) sorted by path.
- `seal(executor, job_id, result_hash)` = H(executor || job_id || result_hash), as in iExec's proof of
  contribution: a copied seal names the wrong executor.
"""

from __future__ import annotations

from .codec import encode, sha256

ManifestEntry = tuple[str, int, bytes]


def result_hash(exit_code: int, timed_out: bool, stdout: bytes, stdout_truncated: bool,
                manifest: tuple[ManifestEntry, ...] = ()) -> bytes:
    entries = [[path, size, digest] for path, size, digest in sorted(manifest)]
    return sha256(b"distributeai/result/v1\x00" + encode([exit_code, timed_out, stdout, stdout_truncated, entries]))


def seal(executor: bytes, job_id: bytes, result_hash_: bytes) -> bytes:
    return sha256(b"distributeai/seal/v1\x00" + executor + job_id + result_hash_)
