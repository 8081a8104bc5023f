"""The sandbox contract: what a job asks for, what comes back, and how a backend is chosen.

Every backend runs one argv (wasm: one module) to completion under limits and returns a
`RunResult`; it raises `SandboxError` only when the sandbox itself could not run the job (daemon
unreachable, image missing, ...) or `cancel` stopped it. A job that fails, is killed on timeout
or runs out of memory is a normal result: every honest executor should report the same outcome
for it.

This package imports nothing from the rest of distributeai.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "KINDS",
    "Hasher",
    "LogSink",
    "OutEntry",
    "REASONS",
    "RunRequest",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "open_sandbox",
]

KINDS = ("docker", "bwrap", "wasm", "process")
REASONS = (
    "daemon_unreachable",
    "image_missing",
    "limits_unsupported",
    "invalid_request",
    "start_failed",
    "cancelled",
    "backend_error",
)

# Docker refuses a memory limit under 6 MB; the process backend could not even exec with less.
MIN_MEMORY_MB = 6

# Exit code of a job killed by a signal, as a shell and `docker wait` report it: 128 + signal.
SIGNAL_EXIT_BASE = 128
# Exit codes a shell gives for a command that is missing (127) or not executable (126); both
# backends report these the same way so executors agree on them.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126

MAX_RUN_ID = 200  # characters

LogSink = logging.Logger | Callable[[str], object]


class Hasher(Protocol):
    """What RunRequest.out_hasher makes: hashlib's shape, for one file."""

    def update(self, data: bytes, /) -> object: ...

    def digest(self) -> bytes: ...


@dataclass(frozen=True)
class RunRequest:
    """One job: an argv and the limits it runs under."""

    image: str  # docker image; the process backend ignores it
    command: list[str]  # argv, run as is (no shell, the image's ENTRYPOINT is replaced)
    env: dict[str, str] = field(default_factory=dict)
    cpu: float = 1.0  # cores
    memory_mb: int = 256
    timeout_s: float = 60.0  # wall clock from start
    pids_limit: int = 64
    output_cap: int = 1 << 20  # max bytes kept of stdout and of stderr each
    stdin: bytes = b""  # fed to the job's standard input, then closed
    # A host directory where the files the job leaves in /out are kept after the run (docker,
    # bwrap; the process backend passes the job's /out as $OUT_DIR; wasm has no directories).
    # While it runs the job writes to a size-limited filesystem of its own (out_max_bytes,
    # out_max_files); afterwards every entry it left is described in RunResult.out_entries, and
    # each regular file hashed is copied into out_dir unless that would leave less than
    # out_keep_free bytes free on out_dir's filesystem.
    out_dir: str | None = None
    out_max_bytes: int = 1 << 30  # bytes of regular files the job may leave in /out
    out_max_files: int = 10_000  # entries (files, directories, links, ...) it may leave there
    out_keep_free: int = 0  # bytes that must stay free on out_dir's filesystem when files are kept
    # What names each regular file left in /out (OutEntry.digest): a factory of objects with
    # `update(bytes)` and `digest() -> bytes`, fed the file's bytes in order as they are copied
    # into out_dir (one read of each file); None: hashlib.sha256. The node passes one that
    # computes the file's IPFS CID, so the sandbox needs no knowledge of CIDs.
    out_hasher: Callable[[], Hasher] | None = None
    # A host directory holding the job's inputs, shown to the job READ-ONLY at /in (docker, bwrap,
    # wasm; the process backend passes it as $IN_DIR and isolates nothing). It is the caller's
    # directory: no backend ever writes to it, and a write into /in fails in the job (EROFS or
    # EACCES). Links inside it are resolved in the job's own view (never towards the host's
    # files). The job runs as uid 65534 on docker and bwrap: it reads what "others" may read, so
    # the caller makes its directories 0755 and its files 0644. Absolute path of an existing
    # directory (checked here, ValueError otherwise).
    in_dir: str | None = None
    wasm_module: bytes | None = None  # the wasm backend runs this module; command[0] is its argv[0]
    fuel: int | None = None  # wasm: the fuel limit (None: the backend's default)
    # Names the run for `Sandbox.cancel`; unique per run (e.g. job id + attempt). None: the run
    # cannot be cancelled.
    run_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.command, list) or not self.command:
            raise ValueError("command must be a non-empty list of str")
        for arg in self.command:
            if not isinstance(arg, str) or "\0" in arg:
                raise ValueError(f"command arguments must be str without NUL: {arg!r}")
        for key, value in self.env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"env must map str to str: {key!r}")
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"invalid env entry: {key!r}")
        if not self.cpu > 0:
            raise ValueError(f"cpu must be > 0, got {self.cpu}")
        if self.memory_mb < MIN_MEMORY_MB:
            raise ValueError(f"memory_mb must be >= {MIN_MEMORY_MB}, got {self.memory_mb}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.pids_limit < 1:
            raise ValueError(f"pids_limit must be >= 1, got {self.pids_limit}")
        if self.output_cap < 0:
            raise ValueError(f"output_cap must be >= 0, got {self.output_cap}")
        for name in ("out_max_bytes", "out_max_files", "out_keep_free"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.in_dir is not None:
            check_in_dir(self.in_dir)
        if self.out_hasher is not None and not callable(self.out_hasher):
            raise ValueError(f"out_hasher must be None or a callable making a hasher, got {self.out_hasher!r}")
        if self.run_id is not None and (
            not isinstance(self.run_id, str) or not 0 < len(self.run_id) <= MAX_RUN_ID or "\0" in self.run_id
        ):
            raise ValueError(f"run_id must be None or 1..{MAX_RUN_ID} characters without NUL: {self.run_id!r}")


def check_in_dir(path: object) -> None:
    """ValueError unless `path` is the absolute path (str, no NUL) of an existing directory."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise ValueError(f"in_dir must be a path (str without NUL): {path!r}")
    if not os.path.isabs(path):
        raise ValueError(f"in_dir must be an absolute path: {path!r}")
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ValueError(f"in_dir {path!r}: {e.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise ValueError(f"in_dir is not a directory: {path!r}")


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # 128 + signal when killed (137 after a timeout or an OOM kill)
    stdout: bytes  # at most output_cap bytes, the first ones the job wrote
    stderr: bytes
    timed_out: bool
    oom_killed: bool
    stdout_truncated: bool
    stderr_truncated: bool
    duration_s: float  # start→exit wall time
    sandbox: str  # "docker" | "bwrap" | "wasm" | "process"
    # Every entry the job left in /out (see OutEntry), sorted by name; at most out_max_files + 1
    # of them (one more than allowed is enough to tell that the quota was exceeded).
    out_entries: tuple["OutEntry", ...] = ()
    # True when /out was a size-limited filesystem while the job ran (root); False: the quota
    # could only be checked afterwards.
    out_enforced: bool = False
    fuel_used: int | None = None  # wasm only: exact, the same on every honest executor


@dataclass(frozen=True)
class OutEntry:
    """One entry the job left in /out, described without judging it (consensus.outputs decides
    what goes into the result: names, quota, what is skipped and why)."""

    name: bytes  # path relative to /out, raw bytes as the filesystem has them
    kind: str  # "file" | "dir" | "symlink" | "fifo" | "socket" | "device" | "other"
    size: int  # st_size for a regular file, else 0
    # RunRequest.out_hasher's digest (SHA-256 by default) of a regular file read (None: not read,
    # past out_max_bytes, or unreadable)
    digest: bytes | None = None
    kept: bool = False  # the file was copied into out_dir (False: not a file, not hashed, or no room)


class SandboxError(Exception):
    """The sandbox could not run the job; says nothing about the job itself.

    `reason` is a short stable code (one of REASONS) for callers and metrics; branch on it, never
    on the message text:
      daemon_unreachable  the Docker daemon did not answer
      image_missing       the image is not present locally (run), or could not be pulled (pull)
      limits_unsupported  the backend cannot enforce memory, cpu or pids limits here
      invalid_request     the backend rejected the request's settings (e.g. more cpus than the host)
      start_failed        the sandbox failed to start the job for another reason
      cancelled           `cancel(run_id)` stopped the run: the job has no result
      backend_error       any other failure of the backend
    """

    def __init__(self, reason: str, message: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown SandboxError reason {reason!r}")
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message

    def __reduce__(self):  # pickle/copy rebuild it from its code, not from the joined text
        return (type(self), (self.reason, self.message))


class Sandbox(Protocol):
    name: str

    def check(self) -> None:
        """Raise SandboxError if the backend cannot run jobs now."""

    def has_image(self, image: str) -> bool:
        """Whether `image` can run without a pull (bwrap, wasm, process: always, they ignore it)."""

    def pull(self, image: str) -> None:
        """Make `image` available, so that has_image(image) holds afterwards. BLOCKING. Returns at
        once when it already is (bwrap, wasm, process: always). SandboxError("image_missing")
        when it cannot be had (Docker: no registry answers, or it has no such image);
        "daemon_unreachable" when the daemon itself does not answer."""

    def run(self, req: RunRequest) -> RunResult:
        """Run one job to completion. BLOCKING: call it via trio.to_thread.run_sync.
        SandboxError("cancelled") if `cancel(req.run_id)` stopped it."""

    def cancel(self, run_id: str) -> None:
        """Stop the run whose RunRequest.run_id is `run_id`, promptly (kill its container, cgroups
        or process group; interrupt its wasm store); that `run()` then raises
        SandboxError("cancelled"). BLOCKING only for the kill itself (bwrap: until the run's
        cgroups are empty, at most 2 s). Thread-safe, idempotent: no error for a run that
        already ended. An id no run has yet is remembered, so a run
        started with it later is cancelled at once (see runs.py)."""

    def close(self) -> None:
        """Release the backend's resources; running jobs are not affected."""


def exec_failure_result(argv0: str, code: int, duration_s: float, sandbox: str) -> RunResult:
    """The result of a job whose argv[0] could not be executed (exit 127 or 126, as a shell
    reports it); the same exit code and stderr bytes from every backend."""
    why = "not found" if code == EXIT_NOT_FOUND else "permission denied"
    return RunResult(
        exit_code=code,
        stdout=b"",
        stderr=f"sandbox: cannot execute {argv0}: {why}\n".encode(),
        timed_out=False,
        oom_killed=False,
        stdout_truncated=False,
        stderr_truncated=False,
        duration_s=duration_s,
        sandbox=sandbox,
    )


def warn(log: LogSink, message: str) -> None:
    """Send a warning to a Logger, or to a print-like callable with a WARNING prefix."""
    if isinstance(log, logging.Logger):
        log.warning(message)
    else:
        log(f"WARNING: {message}")


def open_sandbox(
    kind: str,
    *,
    docker_host: str | None = None,
    log: LogSink | None = None,
) -> Sandbox:
    """Open a backend by name. Never picks one on its own: the caller (config) names it.

    Opening contacts nothing; `check()` tells whether the backend can run jobs.
    docker_host: URL of the daemon (e.g. unix:///tmp/dai-docker/docker.sock); default env DOCKER_HOST.
    log: a logging.Logger or a print-like callable; default the logger "distributeai.sandbox".
    """
    sink: LogSink = log if log is not None else logging.getLogger("distributeai.sandbox")
    if kind == "docker":
        from .docker_backend import DockerSandbox

        return DockerSandbox(docker_host=docker_host, log=sink)
    if kind == "process":
        from .process_backend import ProcessSandbox

        return ProcessSandbox(log=sink)
    if kind == "bwrap":
        from .bwrap_backend import BwrapSandbox

        return BwrapSandbox(log=sink)
    if kind == "wasm":
        from .wasm_backend import WasmSandbox

        return WasmSandbox(log=sink)
    raise ValueError(f"unknown sandbox kind {kind!r}; allowed: {', '.join(KINDS)}")
