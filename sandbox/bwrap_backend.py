"""Jobs in bubblewrap (bwrap) sandboxes, limited by cgroup v1 groups the backend makes per run.

Isolation (flags measured: docs/sandbox.md): new user, pid, net, ipc, uts, mount and
cgroup namespaces; the job runs as uid/gid 65534 with no capabilities, hostname "sandbox", in /tmp.
It sees a read-only root with the host's /usr (read-only), a private /tmp tmpfs (64 MB, as the
Docker backend), private /proc and /dev, /in (read-only) when RunRequest.in_dir is set, and /out
(read-write) when RunRequest.out_dir is set: a
staging directory beside out_dir (outdir.OutStage: a tmpfs of the job's output quota when the node
is root), described, kept into out_dir and removed after the run.
The net namespace is empty: loopback only. The image is ignored. Env: PATH, the request's env and
PWD=/tmp (bwrap sets it).

When the node is root, bwrap itself runs as host uid/gid 65534, so the job is "nobody" on the host
too. Run as root, bwrap maps the job's uid to host root: the job then owns every root-owned file
it can see, and could e.g. `chmod 000 /dev/null` on the host (tried: it works). The unprivileged
bwrap cannot reach an out_dir below a private (0700) directory, and `--bind-fd` does not help (bwrap
0.8 resolves the fd back to its path); so the forked child, still root, enters a private mount
namespace, binds the stage onto OUT_BIND and in_dir onto IN_BIND (read-only) there (the host's
OUT_BIND and IN_BIND stay empty directories; the mounts go away with the run), and bwrap binds
OUT_BIND at /out and IN_BIND read-only at /in.

bwrap's `--json-status-fd` tells whether the job's argv was exec'd at all: without its
"exit-code" record, an exit 1 is bwrap's own failure (setup, or execvp of argv[0]: mapped to 127/126
as the other backends), never the job's, so a job cannot pass its output off as a sandbox error.

Limits: a group per run in each of the memory, pids and cpu v1 hierarchies (bwrap_cgroups.py):
memory (= memory + swap), pids (pids_limit plus the 2 bwrap processes that wrap the job), cfs
quota. The forked child joins the groups before it execs bwrap (writing "0" to cgroup.procs), so
the job never runs outside them.
Plus RLIMIT_CORE 0, and RLIMIT_FSIZE 64 MB when /out is a plain directory (the node could not mount
its tmpfs); otherwise every writable path is a size-limited tmpfs. A cgroup v2-only host: `check()` and `run()` raise
limits_unsupported; jobs never run unlimited.

End of a run: bwrap's pid 1 exits with the job's main process and the kernel kills the rest of
the pid namespace, as Docker does. On timeout every process of the groups gets SIGKILL. The groups
are removed after each run; OOM kills are read from memory.oom_control first. `cancel(run_id)`
SIGKILLs every process of the run's groups (bwrap's own processes included); its run() then
raises SandboxError("cancelled").
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import threading
import time

from .base import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    SIGNAL_EXIT_BASE,
    LogSink,
    RunRequest,
    RunResult,
    SandboxError,
    exec_failure_result,
    warn,
)
from .outdir import OutStage
from .runs import RunHandle, RunRegistry
from .bwrap_cgroups import CGROUP_DIR, CONTROLLERS, JobGroups, find_cgroup_bases, remove_stale_groups
from .process_backend import CHUNK, DEFAULT_PATH, FILE_SIZE_LIMIT, _ExitWatch, read_capped

__all__ = ["BwrapSandbox", "CGROUP_DIR", "find_cgroup_bases"]

NAME = "bwrap"
JOB_UID = JOB_GID = 65534  # nobody:nogroup, inside the sandbox and (node run as root) on the host
HOSTNAME = "sandbox"  # as the Docker backend: jobs that print it agree across executors
TMP_SIZE = 64 << 20  # the Docker backend's /tmp size; tmpfs pages also count against memory_mb
OUT_MOUNT = "/out"
IN_MOUNT = "/in"  # RunRequest.in_dir, read-only
# Node run as root: the job's stage and in_dir are bound here in the child's private mount namespace
# (the host's copies stay empty directories), as bwrap, running as nobody, may not be able to walk
# to them (a 0700 parent).
OUT_BIND = "/run/distributeai-bwrap-out"
IN_BIND = "/run/distributeai-bwrap-in"
DRAIN_S = 1.0  # after exit the whole pid namespace is dead, pipes reach EOF at once; a bound only
# The isolation flags that held (docs/sandbox.md), plus a fixed hostname and /tmp size.
ISOLATION = [
    "--unshare-all", "--unshare-user", "--uid", str(JOB_UID), "--gid", str(JOB_GID),
    "--cap-drop", "ALL", "--die-with-parent", "--new-session",
    "--hostname", HOSTNAME,
    "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
    "--size", str(TMP_SIZE), "--tmpfs", "/tmp",
    "--proc", "/proc", "--dev", "/dev",
    "--clearenv",
]  # fmt: skip


def _bwrap_path() -> str | None:
    return shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")


Limits = list[tuple[int, tuple[int, int]]]


def _rlimits(cap_files: bool) -> Limits:
    """RLIMIT_CORE 0, and RLIMIT_FSIZE 64 MB when cap_files: only when /out is a plain directory on
    the host's disk; /tmp and a tmpfs /out are size-limited mounts (ENOSPC, as in Docker)."""
    wanted = [(resource.RLIMIT_CORE, 0)] + ([(resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)] if cap_files else [])
    limits = []
    for res, value in wanted:
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        limits.append((res, (value, value)))
    return limits


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 0x1, 0x20, 0x1000, 0x4000, 0x80000
# What the root child binds before it drops to nobody: (host source, target under /run, read-only).
Binds = list[tuple[bytes, bytes, bool]]


def _bind_in_private_namespace(binds: Binds) -> None:
    """In the forked child (root): a mount namespace of its own, then bind each source on its
    target (read-only ones remounted read-only: bwrap's --ro-bind does it again inside)."""
    steps = [
        (lambda: _libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)"),
        (lambda: _libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /"),
    ]
    for source, target, read_only in binds:
        steps.append((lambda s=source, t=target: _libc.mount(s, t, None, MS_BIND, None), f"mount --bind {target!r}"))
        if read_only:
            flags = MS_BIND | MS_REMOUNT | MS_RDONLY
            steps.append((lambda t=target: _libc.mount(None, t, None, flags, None), f"remount {target!r} ro"))
    for ok, what in steps:
        if ok() != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")


def _child_setup(procs_files: list[str], limits: Limits, drop: bool, binds: Binds) -> None:
    # Runs in the forked child before it execs bwrap. Only plain syscall wrappers: no lock another
    # thread of the node could hold at fork time (the preexec_fn caveat).
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")  # v1: "0" moves the writing process (and its future children)
        finally:
            os.close(fd)
    for res, pair in limits:
        resource.setrlimit(res, pair)
    if binds:
        # By path: a mount from an fd opened in the node's namespace is refused (EINVAL) here.
        _bind_in_private_namespace(binds)
    if drop:
        os.setgroups([])
        os.setgid(JOB_GID)
        os.setuid(JOB_UID)


def _exec_failure_code(stderr: bytes, argv0: str) -> int | None:
    """bwrap reports a failed exec of argv[0] as `bwrap: execvp ARGV0: STRERROR` and exit 1."""
    prefix = f"bwrap: execvp {argv0}: ".encode()
    lines = stderr.splitlines()
    if not lines or not lines[-1].startswith(prefix):
        return None
    why = lines[-1][len(prefix) :]
    if why in (b"No such file or directory", b"Not a directory"):
        return EXIT_NOT_FOUND
    return EXIT_NOT_EXECUTABLE  # Permission denied, Exec format error, ...


def _job_was_executed(status: bytes) -> bool:
    """Whether bwrap's --json-status-fd output has the "exit-code" record: bwrap writes it only
    when the sandbox was set up and execvp of argv[0] succeeded."""
    for line in status.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "exit-code" in doc:
            return True
    return False


def _prepare_bind(path: str) -> None:
    """Make `path` (OUT_BIND, IN_BIND), an empty root-owned directory the child binds on (node as root)."""
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise SandboxError("backend_error", f"cannot create {path}: {e}") from e
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        raise SandboxError("backend_error", f"{path} is not a directory owned by root")


class BwrapSandbox:
    """Sandbox backend on bubblewrap + cgroup v1. Thread-safe: runs may overlap."""

    name = NAME

    def __init__(self, *, log: LogSink) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._bwrap: str | None = None
        self._bases: dict[str, str] | None = None
        self._checked = False
        self._runs = RunRegistry()

    def _setup(self) -> tuple[str, dict[str, str]]:
        """bwrap's path and the cgroup bases; SandboxError if either is missing."""
        with self._lock:
            if self._bwrap is None:
                path = _bwrap_path()
                if path is None:
                    raise SandboxError("backend_error", "bubblewrap is not installed")
                self._bwrap = path
            if self._bases is None:
                bases = find_cgroup_bases()
                missing = [c for c in CONTROLLERS if c not in bases]
                if missing:
                    raise SandboxError(
                        "limits_unsupported",
                        f"no cgroup v1 hierarchy for {', '.join(missing)} "
                        "(the bwrap backend needs cgroup v1 memory, pids and cpu controllers)",
                    )
                for c in CONTROLLERS:
                    parent = os.path.join(bases[c], CGROUP_DIR)
                    if not os.access(bases[c], os.W_OK) and not os.access(parent, os.W_OK):
                        raise SandboxError(
                            "limits_unsupported", f"cannot create cgroups in {bases[c]} (not root?)"
                        )
                self._bases = bases
            return self._bwrap, self._bases

    # -- Sandbox -------------------------------------------------------------------------------

    def check(self) -> None:
        _, bases = self._setup()
        if self._checked:
            return
        for path in remove_stale_groups(bases):
            warn(self._log, f"removed cgroup {path} left by a node that died mid-run")
        # One real run: user namespaces may be disabled, or bwrap unable to mount.
        result = self.run(RunRequest(image="", command=["true"], memory_mb=32, timeout_s=10, pids_limit=4))
        if result.exit_code != 0:
            stderr = result.stderr.decode(errors="replace")
            raise SandboxError("backend_error", f"bwrap probe exited {result.exit_code}: {stderr}")
        self._checked = True

    def has_image(self, image: str) -> bool:
        return True  # the image is ignored: jobs run on the host's read-only /usr

    def pull(self, image: str) -> None:
        return None  # the image is ignored: nothing to fetch

    def cancel(self, run_id: str) -> None:
        """SIGKILL every process of the run's cgroups (see runs.py)."""
        self._runs.cancel(run_id)

    def close(self) -> None:
        return None

    def run(self, req: RunRequest) -> RunResult:
        bwrap, bases = self._setup()
        ncpu = len(os.sched_getaffinity(0))
        if req.cpu > ncpu:  # as Docker refuses it
            raise SandboxError("invalid_request", f"cpu {req.cpu} > {ncpu} cpus available")
        drop = os.geteuid() == 0
        # Node not root: the job is this user on the host and bwrap can reach in_dir and the stage
        # itself; root: the child binds them on IN_BIND and OUT_BIND first (see _child_setup).
        argv, binds = [bwrap, *ISOLATION], []
        if req.in_dir is not None:
            if drop:
                _prepare_bind(IN_BIND)
                binds.append((os.fsencode(req.in_dir), IN_BIND.encode(), True))
            argv += ["--ro-bind", IN_BIND if drop else req.in_dir, IN_MOUNT]
        if req.out_dir is None:
            return self._run_tracked(argv, req, bases, drop, binds, _rlimits(False))
        if drop:
            _prepare_bind(OUT_BIND)
        with OutStage(req, owner=(JOB_UID, JOB_GID) if drop else None, log=self._log) as stage:
            argv += ["--bind", OUT_BIND if drop else stage.path, OUT_MOUNT]
            if drop:
                binds.append((os.fsencode(stage.path), OUT_BIND.encode(), False))
            result = self._run_tracked(argv, req, bases, drop, binds, _rlimits(not stage.enforced))
            entries = stage.collect()  # the run's pid namespace is dead: nothing writes there now
        return _replace(result, out_entries=entries, out_enforced=stage.enforced)

    def _run_tracked(
        self, argv: list[str], req: RunRequest, bases: dict[str, str], drop: bool, binds: Binds,
        limits: Limits,
    ) -> RunResult:
        """Run argv (bwrap and its mounts) with the request's env and argv; binds: what the child
        binds on IN_BIND and OUT_BIND (root), else empty; limits: the rlimits the child sets."""
        for key, value in {"PATH": DEFAULT_PATH, **req.env}.items():
            argv += ["--setenv", key, value]
        # Last mount op: bwrap's root is a tmpfs, writable unless remounted (/tmp, /out stay writable).
        argv += ["--remount-ro", "/", "--chdir", "/tmp", "--", *req.command]
        with self._runs.track(req.run_id) as handle:
            handle.raise_if_cancelled()
            groups = JobGroups(bases)
            try:
                groups.create(req)
                result = self._run(argv, req, groups, drop, binds, limits, handle)
                oom = groups.oom_kills() > 0
            finally:
                for error in groups.remove():
                    warn(self._log, error)
            handle.raise_if_cancelled()
        return _replace(result, oom_killed=True) if oom else result

    def _run(
        self,
        argv: list[str],
        req: RunRequest,
        groups: JobGroups,
        drop: bool,
        binds: Binds,
        limits: Limits,
        handle: RunHandle,
    ) -> RunResult:
        procs_files = groups.procs_files
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        argv = [argv[0], "--json-status-fd", str(status_w), *argv[1:]]
        started = time.monotonic()
        try:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE if req.stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd="/",
                    env={},
                    close_fds=True,
                    pass_fds=(status_w,),
                    start_new_session=True,
                    preexec_fn=lambda: _child_setup(procs_files, limits, drop, binds),
                )
            except (OSError, subprocess.SubprocessError) as e:
                raise SandboxError("start_failed", f"{argv[0]}: {e}") from e
            finally:
                os.close(status_w)
            # By cgroup, not pid: the groups hold bwrap and the job, and never a reused pid.
            handle.attach(groups.kill_all)
            try:
                result = self._supervise(proc, req, groups, started)
            finally:
                handle.detach()
                if proc.returncode is None:
                    _kill(proc.pid)
                    groups.kill_all()
                    proc.wait()
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    if pipe is not None:
                        try:
                            pipe.close()
                        except OSError:
                            pass
            # bwrap has exited: every writer of the status pipe is gone.
            os.set_blocking(status_r, False)
            status = bytearray()
            try:
                while chunk := os.read(status_r, CHUNK):
                    status += chunk
            except BlockingIOError:
                pass
        finally:
            os.close(status_r)
        if proc.returncode == 1 and not result.timed_out and not _job_was_executed(status):
            handle.raise_if_cancelled()  # killed before the job ran: no bwrap failure to report
            # bwrap failed before the job ran: the output is bwrap's alone
            code = _exec_failure_code(result.stderr, req.command[0])
            if code is not None:
                return exec_failure_result(req.command[0], code, result.duration_s, NAME)
            raise SandboxError("start_failed", result.stderr.decode(errors="replace").strip())
        return result

    def _supervise(
        self, proc: subprocess.Popen, req: RunRequest, groups: JobGroups, started: float
    ) -> RunResult:
        assert proc.stdout is not None and proc.stderr is not None
        kept = {"stdout": bytearray(), "stderr": bytearray()}
        truncated = {"stdout": False, "stderr": False}
        deadline = started + req.timeout_s
        timed_out = False
        exited_at: float | None = None
        stdin = memoryview(req.stdin)
        with selectors.DefaultSelector() as sel:
            for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
                os.set_blocking(pipe.fileno(), False)
                sel.register(pipe.fileno(), selectors.EVENT_READ, name)
            if proc.stdin is not None:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")
            watch = _ExitWatch(proc.pid, sel)
            try:
                open_pipes = 2
                while open_pipes or exited_at is None:
                    if exited_at is None and watch.exited():
                        exited_at = time.monotonic()
                    now = time.monotonic()
                    if exited_at is None:
                        if now >= deadline and not timed_out:
                            timed_out = True
                            _kill(proc.pid)  # unreaped, so the pid is still this child
                            groups.kill_all()
                        wait = max(deadline - now, 0.0) if not timed_out else None
                    else:
                        wait = exited_at + DRAIN_S - now
                        if wait <= 0:
                            break
                    poll = watch.poll_interval
                    if poll is not None:
                        wait = poll if wait is None else min(wait, poll)
                    for key, _ in sel.select(wait):
                        if key.data == "exit":
                            watch.close(sel)
                            exited_at = time.monotonic()
                        elif key.data == "stdin":
                            stdin = self._feed(proc, sel, stdin)
                        elif not read_capped(sel, key, kept, truncated, req.output_cap):
                            open_pipes -= 1
            finally:
                watch.close(sel)
        returncode = proc.wait()
        assert exited_at is not None
        duration = exited_at - started
        stdout, stderr = bytes(kept["stdout"]), bytes(kept["stderr"])
        if timed_out:
            code = SIGNAL_EXIT_BASE + signal.SIGKILL
        elif returncode < 0:
            code = SIGNAL_EXIT_BASE - returncode
        else:
            code = returncode
        return RunResult(
            exit_code=code,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            oom_killed=False,  # set by run() from the memory group
            stdout_truncated=truncated["stdout"],
            stderr_truncated=truncated["stderr"],
            duration_s=duration,
            sandbox=NAME,
        )

    @staticmethod
    def _feed(proc: subprocess.Popen, sel: selectors.BaseSelector, data: memoryview) -> memoryview:
        """Write what the pipe takes now; close stdin when all is written or the job closed it."""
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        try:
            written = os.write(fd, data[:CHUNK])
            data = data[written:]
        except BlockingIOError:
            return data
        except OSError:  # EPIPE: the job closed its stdin (or exited) without reading it all
            data = data[:0]
        if not data:
            sel.unregister(fd)
            proc.stdin.close()
        return data


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _replace(result: RunResult, **changes) -> RunResult:
    return dataclasses.replace(result, **changes)
