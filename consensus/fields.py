"""The wire's limits and the checks every message body's fields go through.

Size caps per kind (bytes of the whole envelope) and the caps of single fields, shared by the
spec (spec.py) and the protocol messages (messages.py), and the field parsers their `from_body`
use: each returns the value or raises `RemoteProtocolError("malformed", field)`. The parsers are
this package's own (underscored): a message is parsed only through its type's `from_body`.
"""

from __future__ import annotations

from typing import Any

from .cid import CID_LEN, BadCid, check_cid
from .errors import RemoteProtocolError
from .sampling import check_share

# Size caps per kind (bytes of the whole envelope). A reveal carries stdout; a certificate carries
# the spec and up to MAX_TOTAL_RESULTS awards and reveals, and must still fit one gossip message
# (the overlay's default cap is 1 MiB).
STDOUT_CAP = 32 * 1024
# A reveal's stdout_size counts what the job wrote to stdout up to STDOUT_SEEN_MAX (the bytes the
# sandbox keeps, sandbox.RunRequest.output_cap); STDOUT_SEEN_MAX + 1 stands for "more than that".
STDOUT_SEEN_MAX = 1 << 20
# A reveal carries at most STDERR_CAP bytes of stderr (consensus.executor.certified_stderr says
# which ones). Small: 16 reveals of it must fit a certificate beside CERTIFICATE_RESERVE.
STDERR_CAP = 1536
STDERR_PARTS = ("all", "first", "last")  # all of stderr, or only its first or last STDERR_CAP bytes
STDIN_CAP = 8 * 1024          # input data carried in the spec
WASM_INLINE_CAP = 48 * 1024   # a module up to this size travels in the spec; larger ones by CID
# The largest wasm module a node loads (JobSpec.wasm_cid: a module fetched as a UnixFS file). An
# executor reads the module whole into memory and wasmtime compiles it there (the compiled code is
# several times its size), so this bounds what one job can make a node allocate before it runs.
# 64 MiB: interpreters compiled to WASI (CPython's python.wasm is tens of MiB) fit with room, and
# what it costs stays small beside the memory a node gives the jobs it runs.
WASM_MODULE_MAX = 64 << 20
MANIFEST_MAX_ENTRIES = 64     # output files listed in a reveal
MANIFEST_PATH_MAX = 255
# One manifest entry [path, size, cid] on the wire at most: the path, a 36-byte CIDv1
# (consensus/cid.py), a 9-byte size and the array, string and bytes headers (1 + 2 + 2), rounded up.
MANIFEST_ENTRY_MAX = MANIFEST_PATH_MAX + 52
# A job's output quota (JobSpec.out_max_bytes, out_max_files): the defaults, and the most a spec
# may ask for (a node offers at most what its own --max-output allows).
OUT_MAX_BYTES = 1 << 30
OUT_MAX_FILES = 10_000
OUT_MAX_BYTES_LIMIT = 1 << 40
OUT_MAX_FILES_LIMIT = 1_000_000
# Entries of /out a reveal names without listing them as files (special files, bad names): at most
# OUT_NOTES_MAX of them, each name escaped to printable ASCII of at most OUT_NOTE_NAME_MAX chars.
OUT_NOTES_MAX = 8
OUT_NOTE_NAME_MAX = 120
OUT_NOTE_BYTES = OUT_NOTES_MAX * (OUT_NOTE_NAME_MAX + 40) + 64
# A job's inputs (JobSpec.inputs: CIDs of files or directories an executor fetches and mounts
# read-only at /in, each at a path of its own). 64 entries of a CID and a path of at most 255
# bytes keep the spec far under its 64 KiB cap; the total is capped like an output quota (1 TiB):
# the sizes are the submitter's word, a node compares them with its own store and declines what
# does not fit (`inputs_too_large`), and no sum of them can overflow anything.
MAX_INPUTS = 64
INPUT_PATH_MAX = 255
INPUTS_MAX_BYTES = 1 << 40
SANDBOX_KINDS = ("container", "wasm")
MAX_REPLICAS = 16
MAX_TOTAL_RESULTS = 16
# Batch jobs (a job array, like BOINC's work units): one spec, many tasks, each verified k-of-n on
# its own. Every task result travels in the reveal, so a batch reveal may hold BATCH_REVEAL_CAP
# bytes and a batch may have at most BATCH_MAX_TOTAL_RESULTS awards: its certificate must still
# fit one gossip message.
MAX_TASKS = 1024
MAX_TASK_ARGS = 16
BATCH_REVEAL_CAP = 192 * 1024
BATCH_MAX_TOTAL_RESULTS = 4
CERTIFICATE_CAP = 1_000_000  # under the overlay's 1 MiB message cap
# A numeric comparison (consensus/compare.py) names up to COMPARE_FILES_MAX output files; a reveal
# carries their bytes (Reveal.compared, checked against the manifest's CIDs) so every node can
# compare them without fetching: each file of at most COMPARED_CAP // (files named) bytes, so at
# most COMPARED_CAP in all. Such a job allows at most COMPARED_MAX_TOTAL_RESULTS awards, so that
# its certificate (that many reveals, each with its files) still fits one gossip message.
COMPARE_FILES_MAX = 8
COMPARED_CAP = 16 * 1024
COMPARED_ENTRY_MAX = MANIFEST_PATH_MAX + 12  # [path, bytes] headers beside the path and the bytes
COMPARED_BYTES_MAX = COMPARED_CAP + COMPARE_FILES_MAX * COMPARED_ENTRY_MAX
COMPARED_MAX_TOTAL_RESULTS = 12
# Why a node will not bid (messages.Decline.code); consensus/declines.py says each for people.
DECLINE_CODES = ("image_missing", "not_enough_memory", "not_enough_cpu", "busy", "no_gpu", "no_sandbox",
                 "disk_low", "output_too_large", "submitter_cannot_pay", "inputs_too_large")
DECLINE_DETAIL_MAX = 200
# What a certificate tells about how a job went besides its verdict: the reason it ended (for a
# job that did not verify) and a few of the signed bids and declines.
CERT_REASON_MAX = 200
CERT_BIDS_MAX = 8
CERT_DECLINES_MAX = 8
CERTIFICATE_STATUSES = ("verified", "failed", "nondeterministic")
# Verification (consensus/adaptive.py): the spec's modes, the platform classes a bid advertises
# (its CPU architecture, CPU vendor and GPU model; JobSpec.homogeneous names some of them), the
# largest trust threshold, and the unit of probabilities on the wire (millionths: no floats).
VERIFICATION_MODES = ("replicate", "adaptive")
PLATFORM_CLASSES = ("arch", "cpu", "gpu")
PLATFORM_VALUE_MAX = 64
TRUST_THRESHOLD_MAX = 1_000_000
PPM = 1_000_000
MAX_SIZE = {
    "spec": 64 * 1024,
    "announce": 66 * 1024,
    "widen": 256,  # [kind, [job_id, share, created_ms], signer, signature]: about 150 bytes
    "bid": 1024,
    "decline": 512,
    "award": 1024,
    "commit": 1024,
    "withdraw": 1024,
    "reveal_request": 1024,
    "reveal": max(STDOUT_CAP + STDERR_CAP + MANIFEST_MAX_ENTRIES * MANIFEST_ENTRY_MAX + OUT_NOTE_BYTES
                  + COMPARED_BYTES_MAX, BATCH_REVEAL_CAP) + 1024,
    "certificate": CERTIFICATE_CAP,
}
# A single job's certificate (16 plain reveals) and a batch's (4 batch reveals) both fit, with
# their reason, bids and declines.
# The reserve holds an adaptive job's evidence too (a CV, a draw signature and a signed commit).
CERTIFICATE_RESERVE = (CERT_REASON_MAX + CERT_BIDS_MAX * MAX_SIZE["bid"] + CERT_DECLINES_MAX * MAX_SIZE["decline"]
                       + MAX_SIZE["commit"] + 1024)
assert MAX_SIZE["spec"] + MAX_TOTAL_RESULTS * (STDOUT_CAP + STDERR_CAP + MANIFEST_MAX_ENTRIES * MANIFEST_ENTRY_MAX
                                              + OUT_NOTE_BYTES + 1024 + MAX_SIZE["award"]) + CERTIFICATE_RESERVE <= CERTIFICATE_CAP
# A numeric job naming files: fewer reveals, each with up to COMPARED_BYTES_MAX of them.
assert MAX_SIZE["spec"] + COMPARED_MAX_TOTAL_RESULTS * (STDOUT_CAP + STDERR_CAP + MANIFEST_MAX_ENTRIES * MANIFEST_ENTRY_MAX
                                                       + OUT_NOTE_BYTES + COMPARED_BYTES_MAX + 1024
                                                       + MAX_SIZE["award"]) + CERTIFICATE_RESERVE <= CERTIFICATE_CAP
assert MAX_SIZE["spec"] + BATCH_MAX_TOTAL_RESULTS * (MAX_SIZE["reveal"] + MAX_SIZE["award"]) + CERTIFICATE_RESERVE <= CERTIFICATE_CAP


def task_stdout_cap(tasks: int) -> int:
    """The stdout each task of a batch of `tasks` keeps in a reveal (every honest executor cuts
    at the same place, so truncated outputs still agree)."""
    return min(STDOUT_CAP, BATCH_REVEAL_CAP // max(1, tasks) - 32)


MAX_ENVELOPE = max(MAX_SIZE.values())  # the largest message of any kind


def _fail(name: str, why: str = "") -> RemoteProtocolError:
    return RemoteProtocolError("malformed", f"{name} {why}".strip())


def _int(v: Any, name: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _fail(name, f"must be an integer in [{lo}, {hi}]")
    return v


def _str(v: Any, name: str, max_len: int = 256, allow_empty: bool = True) -> str:
    if not isinstance(v, str) or len(v) > max_len or (not allow_empty and not v):
        raise _fail(name, f"must be a string of at most {max_len} chars")
    return v


def _bytes(v: Any, name: str, length: int | None = None, max_len: int = 1 << 20) -> bytes:
    if not isinstance(v, bytes) or (length is not None and len(v) != length) or len(v) > max_len:
        raise _fail(name, "has the wrong type or length")
    return v


def _list(v: Any, name: str, max_len: int) -> list:
    if not isinstance(v, list) or len(v) > max_len:
        raise _fail(name, f"must be a list of at most {max_len} items")
    return v


def _bool(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(name, "must be a boolean")
    return v


def _arity(body: list, n: int, name: str) -> None:
    if len(body) != n:
        raise _fail(name, f"body must have {n} fields, has {len(body)}")


def _cid(v: Any, name: str) -> bytes:
    """A binary CIDv1 (consensus/cid.py: raw or dag-pb, SHA2-256)."""
    try:
        return check_cid(_bytes(v, name, CID_LEN))
    except BadCid as exc:
        raise _fail(name, str(exc)) from exc


def _share(v: Any) -> int:
    """An eligible share (consensus/sampling.py): an integer in [1, SHARE_ALL]."""
    try:
        return check_share(v)
    except ValueError as exc:
        raise _fail("share", str(exc)) from None
