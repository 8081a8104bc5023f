"""The job spec: what to run and how it is verified, signed by its submitter.

`JobSpec` (kind "spec") parses and checks every field (`from_body`); `job_id_of(signed_spec)` is
the job's id, the SHA-256 of the signed spec's canonical bytes. The other protocol messages are in
messages.py, which re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .cid import BadCid, check_cid
from .codec import sha256
from .compare import EXACT, Compare
from .fields import (
    BATCH_MAX_TOTAL_RESULTS, CERT_BIDS_MAX, COMPARED_MAX_TOTAL_RESULTS, PLATFORM_CLASSES, PPM, TRUST_THRESHOLD_MAX, VERIFICATION_MODES, INPUT_PATH_MAX, INPUTS_MAX_BYTES, MAX_INPUTS, MAX_REPLICAS, OUT_MAX_BYTES, OUT_MAX_BYTES_LIMIT, OUT_MAX_FILES,
    OUT_MAX_FILES_LIMIT, MAX_TASK_ARGS, MAX_TASKS, MAX_TOTAL_RESULTS, SANDBOX_KINDS, STDIN_CAP,
    WASM_INLINE_CAP, _arity, _bool, _bytes, _fail, _int, _list, _str,
)
from .outputs import relative_path_problem


@dataclass(frozen=True)
class JobSpec:
    """What to run and how it is verified. `cpu_millis` is thousandths of a core (no floats on the
    wire); `replicas` is n (BOINC's target_nresults) and `quorum` is k (min_quorum)."""

    kind: ClassVar[str] = "spec"
    author: ClassVar[str | None] = "submitter"
    submitter: bytes
    nonce: bytes
    created_ms: int
    name: str
    image: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cpu_millis: int = 1000
    memory_mb: int = 256
    timeout_s: int = 60
    replicas: int = 3            # BOINC's target_nresults (n)
    quorum: int = 2              # BOINC's min_quorum (k)
    price: int = 1               # credits paid to each agreeing executor
    max_error_results: int = 3   # executors that may fail, time out or vanish before the job fails
    max_total_results: int = 6   # awards in all, replacements included
    result_deadline_s: int = 90  # BOINC's delay_bound: from award to commit, per executor
    sandbox: str = "container"   # "container" (docker, bwrap, process) or "wasm" (always the wasm sandbox)
    stdin: bytes = b""
    wasm_module: bytes = b""     # inline module (at most WASM_INLINE_CAP) ...
    wasm_cid: bytes = b""        # ... or the CID of its bytes as a UnixFS file, fetched into the block store
    gpu: bool = False            # a node without a GPU does not bid
    fuel_limit: int = 0          # wasm: fuel budget (0: the executor's default)
    price_per_mfuel: int = 0     # wasm: credits per million fuel units, paid on top of `price`
    tasks: tuple[tuple[str, ...], ...] = ()  # a batch: each task's arguments, appended to `command`
    # The job's output quota: what it may leave in /out, in bytes (file sizes) and entries (files,
    # directories, links, ...). Past either, every honest executor reports `out_quota_exceeded`.
    out_max_bytes: int = OUT_MAX_BYTES
    out_max_files: int = OUT_MAX_FILES
    # The job's inputs: (CID, path under /in, size), each a file or a directory tree already on
    # the network (a UnixFS DAG), which executors fetch before running and mount read-only at
    # /in/PATH. `size` is the file bytes under the CID as its submitter found them (the sum over a
    # directory's files), so an executor knows the cost before it bids (`check_inputs`).
    inputs: tuple[tuple[bytes, str, int], ...] = ()
    # How the result is verified (consensus/adaptive.py): "replicate", k-of-n on every job, or
    # "adaptive": a bidder whose consecutive-valid count in the job's runtime class is at least
    # `trust_threshold` runs it alone, spot-checked with probability max(1/CV, floor), the floor in
    # millionths (no floats on the wire).
    verification: str = "replicate"
    trust_threshold: int = 10
    spot_check_floor_ppm: int = 50_000
    compare: Compare = EXACT  # how two results are compared (consensus/compare.py)
    homogeneous: tuple[str, ...] = ()  # platform classes every executor shares (adaptive.PLATFORM_CLASSES)

    @property
    def is_batch(self) -> bool:
        return bool(self.tasks)

    def task_command(self, i: int) -> list[str]:
        """The command line of task i of a batch (the spec's own command for a single job)."""
        return list(self.command) + (list(self.tasks[i]) if self.tasks else [])

    def to_body(self) -> list:
        return [
            self.submitter, self.nonce, self.created_ms, self.name, self.image,
            list(self.command), [list(p) for p in sorted(self.env)], self.cpu_millis,
            self.memory_mb, self.timeout_s, self.replicas, self.quorum, self.price,
            self.max_error_results, self.max_total_results, self.result_deadline_s,
            self.sandbox, self.stdin, self.wasm_module, self.wasm_cid, self.gpu, self.fuel_limit,
            self.price_per_mfuel, [list(t) for t in self.tasks], self.out_max_bytes, self.out_max_files,
            [list(i) for i in self.inputs], self.verification, self.trust_threshold,
            self.spot_check_floor_ppm, self.compare.to_body(), list(self.homogeneous),
        ]

    @property
    def inputs_size(self) -> int:
        """The file bytes of all the job's inputs, as its submitter states them."""
        return sum(size for _, _, size in self.inputs)

    @property
    def block_roots(self) -> tuple[bytes, ...]:
        """The CIDs of the DAGs a node holds in its block store for this job: its wasm module's
        (when it does not travel inline) and each input's."""
        return ((self.wasm_cid,) if self.wasm_cid else ()) + tuple(cid for cid, _, _ in self.inputs)

    @property
    def min_quorum(self) -> int:
        return self.quorum

    @property
    def target_nresults(self) -> int:
        return self.replicas

    @classmethod
    def from_body(cls, body: list) -> "JobSpec":
        _arity(body, 32, "spec")
        command = tuple(_str(a, "command[]", 4096) for a in _list(body[5], "command", 256))
        if not command:
            raise _fail("command", "must not be empty")
        env = []
        for pair in _list(body[6], "env", 128):
            pair = _list(pair, "env[]", 2)
            if len(pair) != 2:
                raise _fail("env[]", "must be a [name, value] pair")
            env.append((_str(pair[0], "env name", 256, False), _str(pair[1], "env value", 4096)))
        if env != sorted(env) or len({k for k, _ in env}) != len(env):
            raise _fail("env", "must be sorted by name without duplicates")
        spec = cls(
            submitter=_bytes(body[0], "submitter", 32),
            nonce=_bytes(body[1], "nonce", 16),
            created_ms=_int(body[2], "created_ms"),
            name=_str(body[3], "name", 256),
            image=_str(body[4], "image", 512),
            command=command,
            env=tuple(env),
            cpu_millis=_int(body[7], "cpu_millis", 1, 256_000),
            memory_mb=_int(body[8], "memory_mb", 6, 1 << 20),
            timeout_s=_int(body[9], "timeout_s", 1, 7 * 24 * 3600),
            replicas=_int(body[10], "replicas", 1, MAX_REPLICAS),
            quorum=_int(body[11], "quorum", 1, MAX_REPLICAS),
            price=_int(body[12], "price", 0, 2**53),
            max_error_results=_int(body[13], "max_error_results", 0, 4 * MAX_REPLICAS),
            max_total_results=_int(body[14], "max_total_results", 1, MAX_TOTAL_RESULTS),
            result_deadline_s=_int(body[15], "result_deadline_s", 1, 30 * 24 * 3600),
            sandbox=_str(body[16], "sandbox", 16),
            stdin=_bytes(body[17], "stdin", max_len=STDIN_CAP),
            wasm_module=_bytes(body[18], "wasm_module", max_len=WASM_INLINE_CAP),
            wasm_cid=check_wasm_cid(body[19]),
            gpu=_bool(body[20], "gpu"),
            fuel_limit=_int(body[21], "fuel_limit", 0, 2**62),
            price_per_mfuel=_int(body[22], "price_per_mfuel", 0, 2**40),
            tasks=tuple(tuple(_str(a, "tasks[][]", 256) for a in _list(t, "tasks[]", MAX_TASK_ARGS))
                        for t in _list(body[23], "tasks", MAX_TASKS)),
            out_max_bytes=_int(body[24], "out_max_bytes", 0, OUT_MAX_BYTES_LIMIT),
            out_max_files=_int(body[25], "out_max_files", 0, OUT_MAX_FILES_LIMIT),
            inputs=check_inputs(_list(body[26], "inputs", MAX_INPUTS)),
            verification=_str(body[27], "verification", 16),
            trust_threshold=_int(body[28], "trust_threshold", 1, TRUST_THRESHOLD_MAX),
            spot_check_floor_ppm=_int(body[29], "spot_check_floor_ppm", 0, PPM),
            compare=Compare.from_body(body[30]),
            homogeneous=tuple(_str(c, "homogeneous[]", 16) for c in _list(body[31], "homogeneous", len(PLATFORM_CLASSES))),
        )
        if spec.sandbox not in SANDBOX_KINDS:
            raise _fail("sandbox", f"must be one of {', '.join(SANDBOX_KINDS)}")
        if spec.sandbox == "wasm":
            if bool(spec.wasm_module) == bool(spec.wasm_cid):
                raise _fail("wasm_module", "a wasm job carries its module or its CID, not both or neither")
        elif spec.wasm_module or spec.wasm_cid or not spec.image:
            raise _fail("image", "a container job names an image and carries no wasm module")
        check_verification(spec)
        if spec.quorum > spec.replicas:
            raise _fail("quorum", "must not exceed replicas")
        if spec.max_total_results < spec.replicas:
            raise _fail("max_total_results", "must be at least replicas")
        if spec.tasks and spec.max_total_results > BATCH_MAX_TOTAL_RESULTS:
            raise _fail("max_total_results", f"a batch allows at most {BATCH_MAX_TOTAL_RESULTS}")
        return spec


def check_verification(spec: JobSpec) -> None:
    """The verification fields together: a known mode, platform classes sorted and known, and
    what a batch cannot do yet (run once, or compare numbers: each task is tallied exactly), and a
    homogeneous job's awards few enough that every executor's signed bid (its platform) fits the
    certificate, and a numeric job naming files few enough that every reveal's carried files fit
    it (fields.COMPARED_MAX_TOTAL_RESULTS)."""
    if spec.verification not in VERIFICATION_MODES:
        raise _fail("verification", f"must be one of {', '.join(VERIFICATION_MODES)}")
    if spec.homogeneous != tuple(sorted(set(spec.homogeneous))) or not set(spec.homogeneous) <= set(PLATFORM_CLASSES):
        raise _fail("homogeneous", f"must be sorted, distinct names from {', '.join(PLATFORM_CLASSES)}")
    if spec.tasks and (spec.verification != "replicate" or spec.compare.kind != "exact"):
        raise _fail("verification", "a batch is replicated and compared exactly")
    if spec.homogeneous and spec.max_total_results > CERT_BIDS_MAX:
        raise _fail("max_total_results", f"a homogeneous job allows at most {CERT_BIDS_MAX}")
    if spec.compare.files and spec.max_total_results > COMPARED_MAX_TOTAL_RESULTS:
        raise _fail("max_total_results", f"a job comparing output files allows at most {COMPARED_MAX_TOTAL_RESULTS}")


def check_wasm_cid(value) -> bytes:
    """JobSpec.wasm_cid from its body: empty (the module travels inline, or the job runs an
    image), or the binary CIDv1 of the module's bytes as a UnixFS file, one this network accepts
    (consensus.cid.check_cid; the error names the defect)."""
    cid = _bytes(value, "wasm_cid", max_len=64)
    if not cid:
        return b""
    try:
        return check_cid(cid)
    except BadCid as exc:
        raise _fail("wasm_cid", str(exc)) from None


def input_path_problem(path: str) -> str | None:
    """Why `path` cannot be where an input appears under /in (None: it can): a relative path of
    at most INPUT_PATH_MAX bytes of UTF-8, no empty, "." or ".." component, no control character."""
    if not isinstance(path, str):
        return "is not a string"
    return relative_path_problem(path, INPUT_PATH_MAX)


def check_inputs(items: list) -> tuple[tuple[bytes, str, int], ...]:
    """JobSpec.inputs from its body: at most MAX_INPUTS [cid, path, size] triples, each CID one this
    network accepts, each path a safe relative path (`input_path_problem`), no path twice and none
    inside another (an input at "data" leaves no room for one at "data/x"), sizes >= 0 and their
    total at most INPUTS_MAX_BYTES."""
    inputs = []
    for item in items:
        item = _list(item, "inputs[]", 3)
        if len(item) != 3:
            raise _fail("inputs[]", "must be [cid, path, size]")
        try:
            cid = check_cid(_bytes(item[0], "inputs[] cid", max_len=64))
        except BadCid as exc:
            raise _fail("inputs[] cid", str(exc)) from None
        path = _str(item[1], "inputs[] path", 4 * INPUT_PATH_MAX)
        problem = input_path_problem(path)
        if problem:
            raise _fail("inputs[] path", problem)
        inputs.append((cid, path, _int(item[2], "inputs[] size", 0, INPUTS_MAX_BYTES)))
    paths = {path for _, path, _ in inputs}
    if len(paths) != len(inputs):
        raise _fail("inputs", "two inputs at one path")
    for path in paths:
        parts = path.split("/")
        if any("/".join(parts[:i]) in paths for i in range(1, len(parts))):
            raise _fail("inputs", f"{path!r} lies inside another input")
    if sum(size for _, _, size in inputs) > INPUTS_MAX_BYTES:
        raise _fail("inputs", f"their total size is over {INPUTS_MAX_BYTES} bytes")
    return tuple(inputs)


def job_id_of(signed_spec: bytes) -> bytes:
    """`job_id` is the SHA-256 of the canonical bytes of the signed spec."""
    return sha256(signed_spec)
