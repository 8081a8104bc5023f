"""Jobs as plain child processes: for development and tests on machines without Docker.

This isolates NOTHING: a job runs as the node's user, sees the host's files and network (the
node's key file and data directory included: it can read them) and can escape its process group
(setsid). It is never chosen automatically; opening it logs a warning.

What it does give, so results match the Docker backend for honest jobs:
- the argv runs with exactly the given env plus a minimal PATH, in a fresh temporary directory;
- rlimits: address space = memory_mb, CPU seconds = cpu × timeout_s, no core files, files up to
  64 MB (the Docker backend's /tmp size); no RLIMIT_NPROC, since it counts every process and thread
  of the user (the node's own too) and root ignores it, so pids_limit is not enforced here;
- on timeout the whole process group gets SIGKILL; when the job's main process exits the rest of
  its group is killed too, as Docker does when a container's main process exits;
- stdout and stderr are read in chunks and kept up to output_cap each; the rest is read and
  dropped, so a chatty job neither blocks on a full pipe nor fills the node's memory;
- exit codes as Docker reports them: 128 + signal for a killed job, 127/126 when argv[0] cannot
  be executed;
- stdin (RunRequest.stdin) is written through a pipe by the same selector loop that reads the
  output, then closed (EOF); a job that never reads it only leaves the write pending until it
  exits. Empty stdin is /dev/null;
- out_dir: this backend cannot show the job a /out. It passes the job's staging directory
  (outdir.OutStage, beside out_dir: a tmpfs of the job's output quota when the node is root) as the
  env variable OUT_DIR instead, overriding any OUT_DIR in RunRequest.env: jobs meant to run here
  must write their files to $OUT_DIR (a portable job writes to "${OUT_DIR:-/out}"). Nothing stops
  a job from writing elsewhere. After the run the stage is described (links are not followed), what
  may be kept is copied into out_dir, and the stage is removed.
- in_dir: passed as the env variable IN_DIR (overriding any IN_DIR in RunRequest.env), the host
  path itself: NOT read-only here. The job runs as the node's user and can write, delete or
  replace what is in in_dir; a portable job reads "${IN_DIR:-/in}".
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import time

from .runs import RunHandle, RunRegistry
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

__all__ = ["ProcessSandbox"]

NAME = "process"
WARNING = "process sandbox isolates nothing: jobs run as this user on this host and can read the node's key"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
FILE_SIZE_LIMIT = 64 << 20  # matches the Docker backend's /tmp tmpfs size
CHUNK = 64 << 10  # one pipe buffer's worth per read
# After the main process exits, how long to keep reading pipes that an escaped process (one that
# left the group) may hold open. Output written after that is lost; the job's outcome is known.
DRAIN_S = 1.0
POLL_S = 0.05  # only without pidfd_open (Linux < 5.3): how often to look for the exit


def _rlimits(req: RunRequest) -> list[tuple[int, tuple[int, int]]]:
    """The limits to set in the child, clamped to the current hard limits (raising them needs root)."""
    cpu_s = max(1, math.ceil(req.cpu * req.timeout_s))
    wanted = [
        (resource.RLIMIT_AS, req.memory_mb << 20, req.memory_mb << 20),
        # soft: SIGXCPU, hard one second later: SIGKILL
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT, FILE_SIZE_LIMIT),
    ]
    limits = []
    for res, soft, hard in wanted:
        _, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        limits.append((res, (soft, hard)))
    return limits


def _set_rlimits(limits: list[tuple[int, tuple[int, int]]]) -> None:
    # Runs in the forked child before exec. Only calls into an already-imported C function, so it
    # takes no lock another thread of the node could hold (the preexec_fn caveat).
    for res, pair in limits:
        resource.setrlimit(res, pair)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _ExitWatch:
    """Tells when the child has exited without reaping it, so its pgid stays valid for killpg."""

    def __init__(self, pid: int, sel: selectors.BaseSelector) -> None:
        self.pid = pid
        self.fd: int | None = None
        try:
            self.fd = os.pidfd_open(pid)
            sel.register(self.fd, selectors.EVENT_READ, "exit")
        except (AttributeError, OSError):
            self.fd = None

    @property
    def poll_interval(self) -> float | None:
        return None if self.fd is not None else POLL_S

    def exited(self) -> bool:
        if self.fd is not None:
            return False  # reported through the selector
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return info is not None

    def close(self, sel: selectors.BaseSelector) -> None:
        if self.fd is not None:
            try:
                sel.unregister(self.fd)
            except (KeyError, ValueError):
                pass
            os.close(self.fd)
            self.fd = None


class _StdinWriter:
    """Feeds a job's stdin pipe from the selector loop: non-blocking writes whenever the pipe has
    room, then close (EOF). A job that does not read only leaves the write pending; a job that
    closed its stdin makes the write fail with EPIPE, which ends the feeding (SIGPIPE is ignored
    in Python, so the node is not killed by it)."""

    def __init__(self, proc: subprocess.Popen, data: bytes, sel: selectors.BaseSelector) -> None:
        self._pipe = proc.stdin
        self._sel = sel
        self._data = memoryview(data)
        self._sent = 0
        self._registered = False
        if self._pipe is None:
            return
        if not data:
            self.close()
            return
        os.set_blocking(self._pipe.fileno(), False)
        sel.register(self._pipe.fileno(), selectors.EVENT_WRITE, "stdin")
        self._registered = True

    def write(self) -> None:
        if self._pipe is None:
            return
        try:
            self._sent += os.write(self._pipe.fileno(), self._data[self._sent : self._sent + CHUNK])
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the job closed its stdin (or exited)
            self.close()
            return
        if self._sent >= len(self._data):
            self.close()

    def close(self) -> None:
        if self._pipe is None:
            return
        if self._registered:
            try:
                self._sel.unregister(self._pipe.fileno())
            except (KeyError, ValueError):
                pass
            self._registered = False
        try:
            self._pipe.close()
        except OSError:
            pass
        self._pipe = None


def read_capped(sel: selectors.BaseSelector, key: selectors.SelectorKey, kept: dict[str, bytearray],
                truncated: dict[str, bool], cap: int) -> bool:
    """Read what is ready on one output pipe (key.data names the stream), keeping at most `cap`
    bytes of it; the rest is read and dropped, and its truncated flag set. Returns False once
    the pipe is at EOF (it is then unregistered from `sel`)."""
    try:
        chunk = os.read(key.fd, CHUNK)
    except BlockingIOError:
        return True
    if not chunk:
        sel.unregister(key.fd)
        return False
    buf = kept[key.data]
    room = cap - len(buf)
    if len(chunk) > room:
        truncated[key.data] = True
        chunk = chunk[:room]
    buf += chunk
    return True


class ProcessSandbox:
    """Sandbox backend running jobs as child processes of the node. Thread-safe."""

    name = NAME

    def __init__(self, *, log: LogSink) -> None:
        warn(log, WARNING)
        self._log = log
        self._runs = RunRegistry()

    def check(self) -> None:
        return None

    def has_image(self, image: str) -> bool:
        return True

    def pull(self, image: str) -> None:
        return None  # the image is ignored: nothing to fetch

    def cancel(self, run_id: str) -> None:
        """SIGKILL the run's process group (see runs.py)."""
        self._runs.cancel(run_id)

    def close(self) -> None:
        return None

    def run(self, req: RunRequest) -> RunResult:
        if req.out_dir is None:
            return self._run_tracked(req, None)
        with OutStage(req, owner=None, log=self._log) as stage:
            result = self._run_tracked(req, stage.path)
            entries = stage.collect()  # after the job's group was killed (escaped processes aside)
        return dataclasses.replace(result, out_entries=entries, out_enforced=stage.enforced)

    def _run_tracked(self, req: RunRequest, out_dir: str | None) -> RunResult:
        with self._runs.track(req.run_id) as handle:
            handle.raise_if_cancelled()
            workdir = tempfile.mkdtemp(prefix="dai-job-")
            try:
                result = self._run_in(workdir, req, out_dir, handle)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            handle.raise_if_cancelled()
        return result

    def _run_in(self, workdir: str, req: RunRequest, out_dir: str | None, handle: RunHandle) -> RunResult:
        env = {"PATH": DEFAULT_PATH, **req.env}
        if out_dir is not None:
            env["OUT_DIR"] = out_dir
        if req.in_dir is not None:
            env["IN_DIR"] = req.in_dir
        limits = _rlimits(req)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                req.command,
                env=env,
                cwd=workdir,
                stdin=subprocess.PIPE if req.stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                start_new_session=True,  # own session and process group: killpg reaches all of it
                preexec_fn=lambda: _set_rlimits(limits),
            )
        except (FileNotFoundError, NotADirectoryError):
            return self._exec_failure(req, EXIT_NOT_FOUND, started)
        except PermissionError:
            return self._exec_failure(req, EXIT_NOT_EXECUTABLE, started)
        except OSError as e:
            if e.errno == errno.ENOEXEC:
                return self._exec_failure(req, EXIT_NOT_EXECUTABLE, started)
            raise SandboxError("start_failed", f"{req.command[0]}: {e}") from e
        except subprocess.SubprocessError as e:  # preexec_fn failed
            raise SandboxError("start_failed", str(e)) from e
        handle.attach(lambda: _kill_group(proc.pid))
        try:
            return self._supervise(proc, req, started, handle)
        finally:
            handle.detach()  # before the reap: the pgid must not be reused under a late cancel
            if proc.returncode is None:
                _kill_group(proc.pid)
                proc.wait()
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
            if proc.stdin is not None:
                proc.stdin.close()

    def _supervise(self, proc: subprocess.Popen, req: RunRequest, started: float, handle: RunHandle) -> RunResult:
        assert proc.stdout is not None and proc.stderr is not None
        kept = {"stdout": bytearray(), "stderr": bytearray()}
        truncated = {"stdout": False, "stderr": False}
        deadline = started + req.timeout_s
        timed_out = False
        exited_at: float | None = None
        with selectors.DefaultSelector() as sel:
            for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
                os.set_blocking(pipe.fileno(), False)
                sel.register(pipe.fileno(), selectors.EVENT_READ, name)
            stdin = _StdinWriter(proc, req.stdin, sel)
            watch = _ExitWatch(proc.pid, sel)
            try:
                open_pipes = 2
                while open_pipes or exited_at is None:
                    if exited_at is None and watch.exited():
                        exited_at = time.monotonic()
                        _kill_group(proc.pid)
                    if exited_at is not None or timed_out:
                        stdin.close()  # nobody will read the rest
                    now = time.monotonic()
                    if exited_at is None:
                        if now >= deadline and not timed_out:
                            timed_out = True
                            _kill_group(proc.pid)
                        wait = max(deadline - now, 0.0) if not timed_out else None
                    else:
                        wait = exited_at + DRAIN_S - now
                        if wait <= 0:
                            break  # pipes held by a process that left the group
                    poll = watch.poll_interval
                    if poll is not None:
                        wait = poll if wait is None else min(wait, poll)
                    for key, _ in sel.select(wait):
                        if key.data == "stdin":
                            stdin.write()
                            continue
                        if key.data == "exit":
                            watch.close(sel)
                            exited_at = time.monotonic()
                            # The exited child is not reaped yet, so its pgid is still ours.
                            _kill_group(proc.pid)
                            continue
                        if not read_capped(sel, key, kept, truncated, req.output_cap):
                            open_pipes -= 1
            finally:
                stdin.close()
                watch.close(sel)
        handle.detach()  # the child is reaped next: its pgid may then be reused
        returncode = proc.wait()
        assert exited_at is not None
        return RunResult(
            exit_code=SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode,
            stdout=bytes(kept["stdout"]),
            stderr=bytes(kept["stderr"]),
            timed_out=timed_out,
            oom_killed=False,  # RLIMIT_AS makes allocations fail instead
            stdout_truncated=truncated["stdout"],
            stderr_truncated=truncated["stderr"],
            duration_s=exited_at - started,
            sandbox=NAME,
        )

    def _exec_failure(self, req: RunRequest, code: int, started: float) -> RunResult:
        return exec_failure_result(req.command[0], code, time.monotonic() - started, NAME)
