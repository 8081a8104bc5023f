"""The protocol's message types and their bodies.

Each type has a `kind` (the envelope's kind string), `to_body()` giving the fixed-order field array,
and `from_body(body)` that validates every field's type and range and raises
`RemoteProtocolError("malformed", field)` otherwise. A message only becomes trusted through
`verify(...)`, which opens the envelope (signature) and parses the body. The spec (`JobSpec`,
`job_id_of`) lives in spec.py and the size caps and field parsers in fields.py; both are
re-exported here, so every message type and cap is importable from this module.

Flow (see docs/architecture.md, "A job's life"):
  JobSpec   signed by the submitter; `job_id` = SHA-256 of the signed spec's canonical bytes.
  Announce  gossip: the signed spec plus the submitter's multiaddrs and the eligible share
            (consensus/sampling.py: who may bid), signed by the submitter.
  Widen     gossip: the submitter doubles a job's eligible share (too few acceptable bids).
  Bid       executor -> submitter: price, capacity, sandbox kinds.
  Award     submitter -> executor: one slot of the job, with a deadline.
  Commit    executor -> submitter: seal = H(executor || job_id || result_hash).
  Decline   executor -> submitter: will not bid, and why (a reason code and a line for people).
  Withdraw  executor -> submitter: cannot deliver; award a replacement now.
  RevealRequest submitter -> executor, only after the commit phase closed.
  Reveal    executor -> submitter: result hash, exit code, stdout.
  Certificate gossip: the verdict with the signed awards and reveals it rests on, why a job that
            failed ended, and (a few of) the signed bids and declines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .adaptive import NO_PLATFORM, Evidence, check_platform
from .codec import Envelope, Identity, encode, open_envelope, sha256
from .errors import RemoteProtocolError
from .fields import (  # noqa: F401  (the caps are re-exported: callers import them from here)
    BATCH_MAX_TOTAL_RESULTS, BATCH_REVEAL_CAP, CERT_BIDS_MAX, CERT_DECLINES_MAX, CERT_REASON_MAX, CERTIFICATE_CAP,
    CERTIFICATE_STATUSES, DECLINE_CODES, DECLINE_DETAIL_MAX, INPUT_PATH_MAX, INPUTS_MAX_BYTES, MAX_INPUTS, MANIFEST_MAX_ENTRIES, MANIFEST_PATH_MAX, MAX_ENVELOPE, OUT_MAX_BYTES, OUT_MAX_BYTES_LIMIT, OUT_MAX_FILES, OUT_MAX_FILES_LIMIT,
    OUT_NOTE_NAME_MAX, OUT_NOTES_MAX, MAX_REPLICAS, MAX_SIZE, MAX_TASK_ARGS, MAX_TASKS, MAX_TOTAL_RESULTS,
    SANDBOX_KINDS, STDERR_CAP, STDERR_PARTS, STDIN_CAP, STDOUT_CAP, STDOUT_SEEN_MAX, WASM_INLINE_CAP, WASM_MODULE_MAX, _arity, _bool, _bytes, _cid, _fail, _int, _list, _share, _str,
    task_stdout_cap,
)
from .outputs import NONE as NO_OUTPUTS, OUT_QUOTA_EXCEEDED, Outputs, is_printable_ascii, name_problem
from .pow import NONCE_MAX as POW_NONCE_MAX
from .reveal_fields import _compared, _outputs, _stderr
from .sampling import SHARE_ALL
from .spec import JobSpec, job_id_of  # noqa: F401  (re-exported: the spec is a message too)
@dataclass(frozen=True)
class Announce:
    """Gossiped once per job: the signed spec, where to reach its submitter, the submitter's
    proof-of-work nonce (`consensus.pow`; checked by every receiver against its difficulty) and the
    share a node must be `sampling.eligible` at to bid (SHARE_ALL, every node, by default)."""

    kind: ClassVar[str] = "announce"
    author: ClassVar[str | None] = None  # the submitter; checked against the spec by the caller
    signed_spec: bytes
    submitter_addrs: tuple[str, ...]
    pow: bytes = b""  # required on the wire; empty passes only difficulty 0
    share: int = SHARE_ALL

    def to_body(self) -> list:
        return [self.signed_spec, list(self.submitter_addrs), self.pow, self.share]

    @classmethod
    def from_body(cls, body: list) -> "Announce":
        _arity(body, 4, "announce")
        addrs = tuple(_str(a, "submitter_addrs[]", 512) for a in _list(body[1], "submitter_addrs", 16))
        return cls(_bytes(body[0], "signed_spec", max_len=MAX_SIZE["spec"]), addrs,
                   _bytes(body[2], "pow", max_len=POW_NONCE_MAX), _share(body[3]))


@dataclass(frozen=True)
class Widen:
    """Gossip: the submitter (checked against the spec by the caller) had too few acceptable bids
    and widens the job's eligible share to `share` (`sampling.widen`), dated like an announcement;
    only a larger share changes anything (`sampling.accept_widen`): a replay is refused."""

    kind: ClassVar[str] = "widen"
    author: ClassVar[str | None] = None  # the submitter; checked against the spec by the caller
    job_id: bytes
    share: int
    created_ms: int

    def to_body(self) -> list:
        return [self.job_id, self.share, self.created_ms]

    @classmethod
    def from_body(cls, body: list) -> "Widen":
        _arity(body, 3, "widen")
        return cls(_bytes(body[0], "job_id", 32), _share(body[1]), _int(body[2], "created_ms"))


@dataclass(frozen=True)
class Bid:
    """Executor -> submitter. `pow` is the bidder's proof-of-work nonce (`consensus.pow`),
    checked by the submitter against its difficulty. `held` is how many bytes of the job's
    inputs the bidder already holds (BOINC's locality scheduling: `submitter.rank_key` prefers
    holders, so a second job on one dataset goes to the nodes that have it); the bidder's own word,
    counted at most up to the inputs' total."""

    kind: ClassVar[str] = "bid"
    author: ClassVar[str | None] = "bidder"
    job_id: bytes
    bidder: bytes
    price: int
    cpu_millis: int
    memory_mb: int
    sandboxes: tuple[str, ...]
    created_ms: int
    pow: bytes = b""  # required on the wire; empty passes only difficulty 0
    held: int = 0  # bytes of the job's inputs already in the bidder's block store
    platform: tuple[str, ...] = NO_PLATFORM  # arch, CPU vendor, GPU model (adaptive.PLATFORM_CLASSES)

    def to_body(self) -> list:
        return [self.job_id, self.bidder, self.price, self.cpu_millis, self.memory_mb,
                list(self.sandboxes), self.created_ms, self.pow, self.held, list(self.platform)]

    @classmethod
    def from_body(cls, body: list) -> "Bid":
        _arity(body, 10, "bid")
        return cls(
            job_id=_bytes(body[0], "job_id", 32),
            bidder=_bytes(body[1], "bidder", 32),
            price=_int(body[2], "price", 0, 2**53),
            cpu_millis=_int(body[3], "cpu_millis", 0, 256_000),
            memory_mb=_int(body[4], "memory_mb", 0, 1 << 24),
            sandboxes=tuple(_str(s, "sandboxes[]", 32) for s in _list(body[5], "sandboxes", 8)),
            created_ms=_int(body[6], "created_ms"),
            pow=_bytes(body[7], "pow", max_len=POW_NONCE_MAX),
            held=_int(body[8], "held", 0, INPUTS_MAX_BYTES),
            platform=check_platform(body[9]),
        )


@dataclass(frozen=True)
class Decline:
    """Executor -> submitter: this node will not bid on the job, and why: `code` (one of
    `DECLINE_CODES`, for code and for counting) and `detail` (one line for people, e.g. "image
    python:3.9-slim is not available locally and could not be pulled"). It lets the submitter end
    a job nobody can run as soon as that is certain, with the reasons counted by kind
    (`consensus.declines`). `pow` as in a Bid: the submitter counts a decline only from an
    identity with its proof-of-work difficulty, so made-up identities cannot pad the reasons."""

    kind: ClassVar[str] = "decline"
    author: ClassVar[str | None] = "bidder"
    job_id: bytes
    bidder: bytes
    code: str
    detail: str
    created_ms: int
    pow: bytes = b""

    def to_body(self) -> list:
        return [self.job_id, self.bidder, self.code, self.detail, self.created_ms, self.pow]

    @classmethod
    def from_body(cls, body: list) -> "Decline":
        _arity(body, 6, "decline")
        code = _str(body[2], "code", 32)
        if code not in DECLINE_CODES:
            raise _fail("code", f"must be one of {', '.join(DECLINE_CODES)}")
        return cls(
            job_id=_bytes(body[0], "job_id", 32),
            bidder=_bytes(body[1], "bidder", 32),
            code=code,
            detail=_printable(body[3], "detail", DECLINE_DETAIL_MAX),
            created_ms=_int(body[4], "created_ms"),
            pow=_bytes(body[5], "pow", max_len=POW_NONCE_MAX),
        )


def _printable(v: Any, name: str, max_len: int) -> str:
    """A line for people from a peer: printable ASCII only, so it can never drive a terminal."""
    text = _str(v, name, max_len)
    if not is_printable_ascii(text):
        raise _fail(name, "must be printable ASCII")
    return text


@dataclass(frozen=True)
class Award:
    """One executor slot of a job, with the deadline for its commit. The executor already holds
    the signed spec: it came in the announcement the executor bid on."""

    kind: ClassVar[str] = "award"
    author: ClassVar[str | None] = None  # the submitter; checked against the spec by the caller
    job_id: bytes
    executor: bytes
    slot: int
    deadline_ms: int

    def to_body(self) -> list:
        return [self.job_id, self.executor, self.slot, self.deadline_ms]

    @classmethod
    def from_body(cls, body: list) -> "Award":
        _arity(body, 4, "award")
        return cls(
            job_id=_bytes(body[0], "job_id", 32),
            executor=_bytes(body[1], "executor", 32),
            slot=_int(body[2], "slot", 0, MAX_TOTAL_RESULTS),
            deadline_ms=_int(body[3], "deadline_ms"),
        )


@dataclass(frozen=True)
class Commit:
    kind: ClassVar[str] = "commit"
    author: ClassVar[str | None] = "executor"
    job_id: bytes
    executor: bytes
    seal: bytes

    def to_body(self) -> list:
        return [self.job_id, self.executor, self.seal]

    @classmethod
    def from_body(cls, body: list) -> "Commit":
        _arity(body, 3, "commit")
        return cls(_bytes(body[0], "job_id", 32), _bytes(body[1], "executor", 32), _bytes(body[2], "seal", 32))


@dataclass(frozen=True)
class Withdraw:
    """Executor -> submitter: this executor cannot deliver (sandbox failure, image missing), so
    the submitter can award a replacement at once instead of waiting for the deadline."""

    kind: ClassVar[str] = "withdraw"
    author: ClassVar[str | None] = "executor"
    job_id: bytes
    executor: bytes
    reason: str

    def to_body(self) -> list:
        return [self.job_id, self.executor, self.reason]

    @classmethod
    def from_body(cls, body: list) -> "Withdraw":
        _arity(body, 3, "withdraw")
        return cls(_bytes(body[0], "job_id", 32), _bytes(body[1], "executor", 32), _str(body[2], "reason", 200))


@dataclass(frozen=True)
class RevealRequest:
    kind: ClassVar[str] = "reveal_request"
    author: ClassVar[str | None] = None  # the submitter; checked against the spec by the caller
    job_id: bytes
    executor: bytes

    def to_body(self) -> list:
        return [self.job_id, self.executor]

    @classmethod
    def from_body(cls, body: list) -> "RevealRequest":
        _arity(body, 2, "reveal_request")
        return cls(_bytes(body[0], "job_id", 32), _bytes(body[1], "executor", 32))


@dataclass(frozen=True)
class Reveal:
    """The executor's result. `result_hash` must equal `expected_hash()` (exit code, timeout,
    stdout, output manifest, fuel, outputs, stderr, stdout size) and match the executor's earlier
    seal; `check_reveal` checks both. `oom_killed` and `sandbox` are reported, signed, but not
    part of the hash. `outputs` (consensus/outputs.py) is: the quota status, how many files the
    job left (the manifest lists the first MANIFEST_MAX_ENTRIES), and the entries skipped with
    why. `stderr` is at most STDERR_CAP bytes of the job's stderr, `stderr_part` says which
    ("all", or only its "first" or "last" bytes; consensus.executor.certified_stderr);
    `stdout_size` is how much the job wrote to stdout (up to STDOUT_SEEN_MAX, STDOUT_SEEN_MAX + 1
    for more; -1: not stated, as after a timeout). A result of OUT_QUOTA_EXCEEDED has exit code
    -1, no stdout, no stderr and no files.

    For a batch, `tasks` holds one TaskResult (exit_code, timed_out, stdout, stdout_truncated,
    fuel_used) per task of the spec, in order (no stderr: it would not fit); the top-level exit
    code, stdout, stderr and manifest are then empty (stdout_size -1) and the result hash is
    `results.batch_hash` of the task hashes.

    `compared` (not under the hash, but each checked against its manifest CID, which is) carries
    the bytes of the output files a numeric comparison names (consensus/compare.py,
    `carried_files`), sorted by path, so every node compares them without fetching."""

    kind: ClassVar[str] = "reveal"
    author: ClassVar[str | None] = "executor"
    job_id: bytes
    executor: bytes
    result_hash: bytes
    exit_code: int
    stdout: bytes
    stdout_truncated: bool
    timed_out: bool
    manifest: tuple[tuple[str, int, bytes], ...] = ()  # (path, size, binary CIDv1)
    fuel_used: int = -1  # -1: not a wasm job
    oom_killed: bool = False
    sandbox: str = ""
    tasks: tuple[tuple[int, bool, bytes, bool, int], ...] = ()
    outputs: Outputs = NO_OUTPUTS
    stderr: bytes = b""
    stderr_part: str = "all"
    stdout_size: int = -1
    compared: tuple[tuple[str, bytes], ...] = ()

    def to_body(self) -> list:
        return [self.job_id, self.executor, self.result_hash, self.exit_code, self.stdout,
                self.stdout_truncated, self.timed_out, [list(m) for m in self.manifest], self.fuel_used,
                self.oom_killed, self.sandbox, [list(t) for t in self.tasks], self.outputs.to_body(),
                self.stderr, self.stderr_part, self.stdout_size, [list(c) for c in self.compared]]

    def task_hashes(self) -> list[bytes]:
        from .results import result_hash

        return [result_hash(code, timed_out, out, trunc, (), fuel) for code, timed_out, out, trunc, fuel in self.tasks]

    def expected_hash(self) -> bytes:
        from .results import batch_hash, result_hash

        if self.tasks:
            return batch_hash(self.task_hashes())
        return result_hash(self.exit_code, self.timed_out, self.stdout, self.stdout_truncated,
                           self.manifest, self.fuel_used, self.outputs, stderr=self.stderr,
                           stderr_part=self.stderr_part, stdout_size=self.stdout_size)

    @classmethod
    def from_body(cls, body: list) -> "Reveal":
        _arity(body, 17, "reveal")
        tasks = []
        for t in _list(body[11], "tasks", MAX_TASKS):
            t = _list(t, "tasks[]", 5)
            if len(t) != 5:
                raise _fail("tasks[]", "must be [exit_code, timed_out, stdout, stdout_truncated, fuel_used]")
            tasks.append((_int(t[0], "task exit_code", -(2**31), 2**31), _bool(t[1], "task timed_out"),
                          _bytes(t[2], "task stdout", max_len=STDOUT_CAP), _bool(t[3], "task stdout_truncated"),
                          _int(t[4], "task fuel_used", -1, 2**63 - 1)))
        manifest = []
        for entry in _list(body[7], "manifest", MANIFEST_MAX_ENTRIES):
            entry = _list(entry, "manifest[]", 3)
            if len(entry) != 3:
                raise _fail("manifest[]", "must be [path, size, cid]")
            manifest.append((_str(entry[0], "manifest path", MANIFEST_PATH_MAX, False),
                             _int(entry[1], "manifest size"), _cid(entry[2], "manifest cid")))
            problem = name_problem(manifest[-1][0].encode())
            if problem is not None:
                raise _fail("manifest path", problem)
        if manifest != sorted(manifest) or len({m[0] for m in manifest}) != len(manifest):
            raise _fail("manifest", "must be sorted by path without duplicates")
        outputs = _outputs(body[12], len(manifest))
        stdout, truncated = _bytes(body[4], "stdout", max_len=STDOUT_CAP), _bool(body[5], "stdout_truncated")
        stderr, part = _stderr(body[13], body[14])
        size = _int(body[15], "stdout_size", -1, STDOUT_SEEN_MAX + 1)
        if outputs.status == OUT_QUOTA_EXCEEDED and (body[3] != -1 or stdout or manifest or truncated or body[6]
                                                     or stderr or size != -1):
            raise _fail("outputs", "a result over the output quota has exit code -1, no stdout, stderr or files")
        if size >= 0 and (len(stdout) != min(size, STDOUT_CAP) or truncated != (size > STDOUT_CAP)):
            raise _fail("stdout_size", "must be the size of stdout, and larger only when stdout was truncated")
        if tasks and (stderr or size != -1):
            raise _fail("tasks", "a batch's reveal carries no stderr and no stdout size")
        return cls(
            job_id=_bytes(body[0], "job_id", 32),
            executor=_bytes(body[1], "executor", 32),
            result_hash=_bytes(body[2], "result_hash", 32),
            exit_code=_int(body[3], "exit_code", -(2**31), 2**31),
            stdout=stdout,
            stdout_truncated=truncated,
            timed_out=_bool(body[6], "timed_out"),
            manifest=tuple(manifest),
            fuel_used=_int(body[8], "fuel_used", -1, 2**63 - 1),
            oom_killed=_bool(body[9], "oom_killed"),
            sandbox=_str(body[10], "sandbox", 16),
            tasks=tuple(tasks),
            outputs=outputs,
            stderr=stderr,
            stderr_part=part,
            stdout_size=size,
            compared=_compared(body[16], manifest, bool(tasks)),
        )


@dataclass(frozen=True)
class Certificate:
    """The submitter's verdict, self-proving: it carries the signed spec, the signed awards and the
    executors' own signed reveals, so any node can re-check it (see `verify_certificate`).
    `reason` says why a job that did not verify ended ("" when verified), for people; `bids` and
    `declines` are up to CERT_BIDS_MAX / CERT_DECLINES_MAX of the signed bids and declines the
    submitter received, so every node can show who offered to run the job and why others would
    not, on the bidders' own signatures."""

    kind: ClassVar[str] = "certificate"
    author: ClassVar[str | None] = None  # the submitter; checked against the spec by the caller
    job_id: bytes
    status: str  # "verified" | "failed" | "nondeterministic"
    result_hash: bytes  # b"" unless verified
    signed_spec: bytes
    awards: tuple[bytes, ...]
    reveals: tuple[bytes, ...]
    created_ms: int
    reason: str = ""
    bids: tuple[bytes, ...] = ()
    declines: tuple[bytes, ...] = ()
    evidence: Evidence | None = None  # an adaptive job's spot-check draw (consensus/adaptive.py)

    def to_body(self) -> list:
        return [self.job_id, self.status, self.result_hash, self.signed_spec, list(self.awards),
                list(self.reveals), self.created_ms, self.reason, list(self.bids), list(self.declines),
                self.evidence.to_body() if self.evidence else []]

    @classmethod
    def from_body(cls, body: list) -> "Certificate":
        _arity(body, 11, "certificate")
        status = _str(body[1], "status", 16)
        if status not in CERTIFICATE_STATUSES:
            raise _fail("status", f"must be one of {', '.join(CERTIFICATE_STATUSES)}")
        rh = _bytes(body[2], "result_hash", max_len=32)
        if len(rh) not in (0, 32):
            raise _fail("result_hash", "must be empty or 32 bytes")
        return cls(
            job_id=_bytes(body[0], "job_id", 32),
            status=status,
            result_hash=rh,
            signed_spec=_bytes(body[3], "signed_spec", max_len=MAX_SIZE["spec"]),
            awards=tuple(_bytes(a, "awards[]", max_len=MAX_SIZE["award"]) for a in _list(body[4], "awards", MAX_TOTAL_RESULTS)),
            reveals=tuple(_bytes(r, "reveals[]", max_len=MAX_SIZE["reveal"]) for r in _list(body[5], "reveals", MAX_TOTAL_RESULTS)),
            created_ms=_int(body[6], "created_ms"),
            reason=_printable(body[7], "reason", CERT_REASON_MAX),
            bids=tuple(_bytes(b, "bids[]", max_len=MAX_SIZE["bid"]) for b in _list(body[8], "bids", CERT_BIDS_MAX)),
            declines=tuple(_bytes(d, "declines[]", max_len=MAX_SIZE["decline"])
                           for d in _list(body[9], "declines", CERT_DECLINES_MAX)),
            evidence=Evidence.from_body(body[10]),
        )


MESSAGE_TYPES: dict[str, type] = {
    t.kind: t for t in (JobSpec, Announce, Widen, Bid, Decline, Award, Commit, Withdraw, RevealRequest, Reveal,
                        Certificate)
}


@dataclass(frozen=True)
class Signed:
    """A verified message: the parsed body, who signed it, and the exact bytes that were signed."""

    msg: Any
    signer: bytes
    raw: bytes

    @property
    def digest(self) -> bytes:
        return sha256(self.raw)


def sign(identity: Identity, msg: Any) -> bytes:
    return identity.sign(msg.kind, msg.to_body())


def verify(data: bytes, expect: type) -> Signed:
    """Open an envelope of type `expect`, check its signature and parse its body.
    Where the message names its author (a spec's submitter, a bid's bidder, a commit's or reveal's
    executor) the author must be the signer. Raises RemoteProtocolError (reasons: oversize,
    malformed, noncanonical, wrong_kind, bad_signature, wrong_signer)."""
    env: Envelope = open_envelope(data, MAX_SIZE[expect.kind], expect.kind)
    msg = expect.from_body(env.body)
    if expect.author is not None and getattr(msg, expect.author) != env.signer:
        raise RemoteProtocolError("wrong_signer", f"{expect.kind} {expect.author} is not its signer")
    return Signed(msg, env.signer, env.raw)


def decode_unsigned(data: bytes, expect: type, max_size: int | None = None) -> Any:
    """For tests, local storage and the control API's unsigned specs: parse a bare body (not an envelope)."""
    from .codec import decode_canonical

    value = decode_canonical(data, max_size or MAX_SIZE[expect.kind])
    if not isinstance(value, list):
        raise _fail(expect.kind, "body is not an array")
    return expect.from_body(value)


def encode_body(msg: Any) -> bytes:
    return encode(msg.to_body())

