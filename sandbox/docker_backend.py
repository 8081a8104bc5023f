"""Jobs in Docker containers, through the blocking `docker` SDK.

One job: create → start → wait(timeout) → on timeout kill and wait again → read stdout and stderr
(capped while streaming) → inspect OOMKilled → remove, always. Not `containers.run(remove=True)`:
it removes the container before its logs are read (docker-py #2427).

Settings, measured on the project's machines (docs/sandbox.md): no network, read-only root
with a size-capped tmpfs at /tmp, uid 65534, no capabilities, no-new-privileges, memory = memory +
swap, cpu quota, pids limit, the `local` log driver (returned full output; json-file inflates output
on disk and its max-size truncates what logs() returns).

Standard input (RunRequest.stdin): empty → the container is created without stdin_open and the
job reads EOF from /dev/null at once. Otherwise it is created with stdin_open (the SDK then sets
StdinOnce, so the daemon closes the job's stdin when our attach connection half-closes); before
start we attach a raw socket to its stdin only, and after start a daemon thread writes the bytes
and shuts down the socket's write side (EOF). A job that never reads stdin does not hang the run:
the writer may stay blocked, but once the container has exited the main thread shuts the socket
down both ways, which fails the pending write, then closes it. (The daemon itself does not end the
attach connection when the container exits while our write is pending: without that shutdown the
writer stayed blocked, measured on dockerd 20.10.)

Output directory (RunRequest.out_dir): an existing host directory. The job never writes there: it
gets a staging directory beside it (outdir.OutStage: a tmpfs of the job's output quota, owned by its
uid 65534:65534) bind-mounted read-write at /out (a Mount, not a `volumes` string, so a host path with
':' or ',' is not misparsed). The rest of the root stays read-only. Once the container is gone the
stage is described (RunResult.out_entries; links are not followed: a job's `/out/x -> /etc/passwd`
points at the host's file once on the host), what may be kept is copied into out_dir, and the stage
is unmounted and removed. The daemon must see this process's mounts (the same host and mount
namespace, as for any bind mount).

Input directory (RunRequest.in_dir): bind-mounted read-only at /in (a Mount with read_only=True,
as /out's, so ':' or ',' in the path is no problem). Writing there fails in the job (EROFS); the
job (uid 65534) reads what the directory's modes let "others" read. Links inside it resolve in the
container (an absolute link names the container's file, never the host's).

Containers carry the label distributeai.sandbox=job, so leftovers of a crashed worker can be
found: `docker ps -a --filter label=distributeai.sandbox=job`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Iterator

import docker
import docker.errors
import docker.types
import requests.exceptions

from .runs import RunHandle, RunRegistry
from .base import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    LogSink,
    RunRequest,
    RunResult,
    SandboxError,
    exec_failure_result,
    warn,
)
from .outdir import OutStage

__all__ = ["DockerSandbox", "LABELS"]

NAME = "docker"
LABELS = {"distributeai": "1", "distributeai.sandbox": "job"}
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"  # the SDK's and the CLI's default

# /tmp is the only writable path. 64 MB bounds disk use; it also counts against the memory limit.
# mode=1777 because the job runs as uid 65534 (without it the job cannot write there).
TMPFS = {"/tmp": "size=64m,mode=1777"}
USER = "65534:65534"  # nobody:nogroup; exists as a number in any image
HOSTNAME = "sandbox"  # fixed, so jobs that print it agree across executors (default: container id)
# The local driver keeps up to max-file × max-size per container (100 MB with these, its defaults,
# written out so a daemon's own defaults cannot change them). Output past that drops the oldest
# file, i.e. the head we keep: outputs over 100 MB may come back without their first bytes.
LOG_CONFIG = docker.types.LogConfig(
    type="local", config={"max-size": "20m", "max-file": "5"}
)
KILL_WAIT_S = 10.0  # after SIGKILL a container exits in milliseconds; this only bounds a sick daemon
IN_MOUNT = "/in"  # where the job sees RunRequest.in_dir, bound read-only
OUT_MOUNT = "/out"  # where the job sees its staging directory (outdir.OutStage)
OUT_OWNER = (65534, 65534)  # the stage's owner, so the job (USER) can write there
# After the container exited and the stdin socket was shut down, how long to wait for the writer
# thread to notice (it returns at once: shutdown fails its pending send).
STDIN_JOIN_S = 5.0

_UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def _read_capped(chunks: Iterator[bytes], cap: int) -> tuple[bytes, bool]:
    """Keep the first `cap` bytes of a chunk stream; stop reading (and close it) past the cap."""
    kept = bytearray()
    truncated = False
    try:
        for chunk in chunks:
            if not chunk:
                continue
            room = cap - len(kept)
            if len(chunk) > room:
                kept += chunk[:room]
                truncated = True
                break
            kept += chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return bytes(kept), truncated


def _exec_failure_code(explanation: str) -> int | None:
    """The shell's exit code for a start error that is the job's fault (bad argv[0]), else None."""
    text = explanation.lower()
    if "executable file not found" in text or "no such file or directory" in text:
        return EXIT_NOT_FOUND
    if "permission denied" in text or "exec format error" in text:
        return EXIT_NOT_EXECUTABLE
    return None


class _StdinFeeder:
    """Writes a job's stdin into a socket attached to the container, from a daemon thread.

    The socket comes from `attach_socket(params={"stdin": 1, "stream": 1})` made BEFORE start.
    `start()` after the container started; `close()` after it exited: that shuts the socket down
    both ways, which ends a write still blocked on a job that never read its stdin.
    """

    def __init__(self, container, data: bytes) -> None:
        self._data = data
        self._attached = container.attach_socket(params={"stdin": 1, "stream": 1})
        # On unix and tcp the SDK returns a socket.SocketIO over the real socket; on TLS the socket.
        self._sock = getattr(self._attached, "_sock", None) or self._attached
        # Blocking writes: the SDK's timeout is a total for sendall, and a job may legitimately
        # read its stdin late; the main thread's shutdown bounds the write instead.
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._feed, name="dai-docker-stdin", daemon=True)

    def _feed(self) -> None:
        try:
            self._sock.sendall(self._data)
            # Half-close: the daemon sees EOF and, as the container has StdinOnce, closes the job's
            # stdin. The read side stays open until close().
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the job exited or closed stdin without reading it all: not an error

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already shut down or closed by the daemon
        if self._thread.ident is not None:  # started
            self._thread.join(STDIN_JOIN_S)
        # Closing the HTTP response closes the hijacked connection for good, so it can never go
        # back to the SDK's connection pool.
        response = getattr(self._attached, "_response", None)
        for closeable in (response, self._attached, self._sock):
            try:
                if closeable is not None:
                    closeable.close()
            except Exception:  # noqa: BLE001 - best effort; the socket is dead either way
                pass


class DockerSandbox:
    """Sandbox backend on a Docker daemon. Thread-safe: jobs may run from several threads."""

    name = NAME

    def __init__(self, *, docker_host: str | None, log: LogSink) -> None:
        self._url = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        self._log = log
        self._lock = threading.Lock()
        self._client: docker.DockerClient | None = None
        self._closed = False
        self._warned_swap = False
        self._runs = RunRegistry()

    # -- client --------------------------------------------------------------------------------

    def _get_client(self) -> docker.DockerClient:
        """The SDK client, made on first use: making it asks the daemon for its API version."""
        with self._lock:
            if self._closed:
                raise SandboxError("backend_error", "sandbox is closed")
            if self._client is None:
                try:
                    self._client = docker.DockerClient(base_url=self._url)
                except docker.errors.DockerException as e:
                    raise SandboxError("daemon_unreachable", f"{self._url}: {e}") from e
            return self._client

    def _unreachable(self, e: Exception) -> SandboxError:
        return SandboxError("daemon_unreachable", f"{self._url}: {e}")

    # -- Sandbox -------------------------------------------------------------------------------

    def check(self) -> None:
        client = self._get_client()
        try:
            info = client.info()
        except _UNREACHABLE as e:
            raise self._unreachable(e) from e
        except docker.errors.APIError as e:
            raise SandboxError("backend_error", str(e)) from e
        missing = [key for key in ("MemoryLimit", "PidsLimit") if not info.get(key)]
        if missing:
            raise SandboxError(
                "limits_unsupported", f"daemon at {self._url} cannot enforce {', '.join(missing)}"
            )
        if not info.get("SwapLimit") and not self._warned_swap:
            self._warned_swap = True
            warn(self._log, f"daemon at {self._url} has no swap limit: jobs may swap past memory_mb")

    def has_image(self, image: str) -> bool:
        client = self._get_client()
        try:
            client.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return False
        except _UNREACHABLE as e:
            raise self._unreachable(e) from e
        except docker.errors.APIError as e:
            raise SandboxError("backend_error", str(e)) from e
        return True

    def pull(self, image: str) -> None:
        """Pull `image` from its registry, unless the daemon has it already. SandboxError
        ("image_missing") when no registry answers or it has no such image (on machines without
        a registry, every pull of an image not built locally ends here)."""
        if self.has_image(image):
            return
        client = self._get_client()
        repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
        try:
            client.api.pull(repository, tag=tag or "latest")
        except _UNREACHABLE as e:
            raise self._unreachable(e) from e
        except docker.errors.APIError as e:
            raise SandboxError("image_missing", f"pull of {image} failed: {e.explanation or e}") from e

    def cancel(self, run_id: str) -> None:
        """Kill the run's container (see runs.py); its run() then removes it as always."""
        self._runs.cancel(run_id)

    def run(self, req: RunRequest) -> RunResult:
        with self._runs.track(req.run_id) as handle:
            handle.raise_if_cancelled()
            result = self._run_tracked(req, handle)
            handle.raise_if_cancelled()
            return result

    def _run_tracked(self, req: RunRequest, handle: RunHandle) -> RunResult:
        mounts = []
        if req.in_dir is not None:
            mounts.append(docker.types.Mount(target=IN_MOUNT, source=req.in_dir, type="bind", read_only=True))
        if req.out_dir is None:
            return self._run_container(req, handle, mounts)
        with OutStage(req, owner=OUT_OWNER, log=self._log) as stage:
            mounts.append(docker.types.Mount(target=OUT_MOUNT, source=stage.path, type="bind", read_only=False))
            result = self._run_container(req, handle, mounts)
            # The container is gone (or at least stopped): nothing writes to the stage any more.
            handle.raise_if_cancelled()
            entries = stage.collect()
        return dataclasses.replace(result, out_entries=entries, out_enforced=stage.enforced)

    def _run_container(self, req: RunRequest, handle: RunHandle, mounts: list) -> RunResult:
        client = self._get_client()
        try:
            container = client.containers.create(
                req.image,
                # argv exactly as given, whatever ENTRYPOINT/CMD the image declares
                entrypoint=list(req.command),
                environment=[f"{k}={v}" for k, v in req.env.items()],
                network_mode="none",
                read_only=True,
                tmpfs=TMPFS,
                user=USER,
                hostname=HOSTNAME,
                # No working_dir: setting it to the tmpfs (/tmp) makes Docker reset that
                # directory to mode 755, and uid 65534 could no longer write there.
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit=f"{req.memory_mb}m",
                memswap_limit=f"{req.memory_mb}m",
                nano_cpus=int(req.cpu * 1e9),
                pids_limit=req.pids_limit,
                log_config=LOG_CONFIG,
                labels=LABELS,
                mounts=mounts or None,
                # With stdin_open the SDK also sets StdinOnce: the job's stdin closes when our
                # attach half-closes. Without it the job's stdin is /dev/null (EOF at once).
                stdin_open=bool(req.stdin),
                tty=False,
            )
        except docker.errors.ImageNotFound as e:
            raise SandboxError("image_missing", req.image) from e
        except _UNREACHABLE as e:
            raise self._unreachable(e) from e
        except docker.errors.APIError as e:
            if e.status_code == 400:
                raise SandboxError("invalid_request", e.explanation or str(e)) from e
            raise SandboxError("backend_error", str(e)) from e
        try:
            result = self._run_created(container, req, handle)
        except _UNREACHABLE as e:
            raise self._unreachable(e) from e
        except docker.errors.APIError as e:
            raise SandboxError("backend_error", str(e)) from e
        finally:
            try:
                container.remove(force=True)
            except Exception as e:  # noqa: BLE001 - cleanup must not mask the job's outcome
                warn(self._log, f"could not remove container {container.id[:12]}: {e}")
        return result

    def _run_created(self, container, req: RunRequest, handle: RunHandle) -> RunResult:
        # Attach before start, as `docker run -i` does: the job cannot read stdin before we are
        # connected, and a job that exits at once cannot make the attach fail.
        feeder = _StdinFeeder(container, req.stdin) if req.stdin else None
        try:
            return self._start_and_wait(container, req, feeder, handle)
        finally:
            handle.detach()
            if feeder is not None:
                feeder.close()

    def _start_and_wait(
        self, container, req: RunRequest, feeder: _StdinFeeder | None, handle: RunHandle
    ) -> RunResult:
        handle.raise_if_cancelled()  # cancelled while it was being created: never started
        started = time.monotonic()
        try:
            container.start()
        except docker.errors.APIError as e:
            code = _exec_failure_code(str(e.explanation or e))
            if code is None:
                raise SandboxError("start_failed", str(e.explanation or e)) from e
            return exec_failure_result(req.command[0], code, time.monotonic() - started, NAME)
        # Killed from the cancelling thread; a container that exited meanwhile answers 409.
        handle.attach(container.kill)
        if feeder is not None:
            feeder.start()
        timed_out = False
        remaining = req.timeout_s - (time.monotonic() - started)
        try:
            status = container.wait(timeout=max(remaining, 0.001))
        except _UNREACHABLE:
            # The wait's read timed out (the SDK reports it as ConnectionError or ReadTimeout).
            # If the daemon is gone instead, kill() raises and run() reports it unreachable.
            try:
                container.kill()
                timed_out = True
            except docker.errors.APIError as e:
                if e.status_code != 409:  # 409: it exited by itself just now
                    raise
            status = container.wait(timeout=KILL_WAIT_S)
        handle.raise_if_cancelled()  # killed by cancel: its output is nobody's result, not read
        duration = time.monotonic() - started
        stdout, stdout_truncated = _read_capped(
            container.logs(stdout=True, stderr=False, stream=True, follow=False), req.output_cap
        )
        stderr, stderr_truncated = _read_capped(
            container.logs(stdout=False, stderr=True, stream=True, follow=False), req.output_cap
        )
        container.reload()
        state = container.attrs.get("State", {})
        return RunResult(
            exit_code=int(status.get("StatusCode", state.get("ExitCode", -1))),
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            oom_killed=bool(state.get("OOMKilled", False)),
            stdout_truncated=stdout_truncated,
            stderr_truncated=stderr_truncated,
            duration_s=duration,
            sandbox=NAME,
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()

