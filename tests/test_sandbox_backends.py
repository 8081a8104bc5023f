"""What only one sandbox backend promises: Docker's isolation (no network, read-only root, limits,
cleanup) with a real dockerd, and the process backend's env, workdir and warnings."""

from __future__ import annotations

import hashlib
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import trio

from distributeai.sandbox import OutEntry, RunRequest, RunResult, SandboxError, open_sandbox
from distributeai.sandbox.docker_backend import LABELS

from .sandbox_helpers import (  # noqa: F401 - fixtures are used by name
    IMAGE, PROMPT_S, job, quiet, sandbox, docker_sandbox, process_sandbox, sha256, big_stdin, out_dir, timed_run,
)


# ---- docker only ------------------------------------------------------------------------------


@contextlib.contextmanager
def tcp_greeter() -> Iterator[int]:
    """A TCP server on all host addresses that greets and closes each connection; yields its port."""
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello-from-host\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(timeout=5)


def host_address() -> str | None:
    """The host's address on its default route (a route lookup only; nothing is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        return probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()


@pytest.mark.docker
def test_docker_has_no_network(docker_sandbox, process_sandbox):
    targets = ["127.0.0.1"] + [a for a in [host_address()] if a and a != "127.0.0.1"]
    with tcp_greeter() as port:
        probe = " ; ".join(f"busybox nc -w 2 {a} {port} </dev/null; echo rc=$?" for a in targets)
        # Control: the same probe from the host reaches the server, so the probe itself works.
        control = process_sandbox.run(job("sh", "-c", probe, timeout_s=10))
        assert control.stdout.count(b"hello-from-host") == len(targets)
        result = docker_sandbox.run(job("sh", "-c", probe, timeout_s=10))
    assert b"hello-from-host" not in result.stdout
    assert result.stdout.count(b"rc=1") == len(targets)
    interfaces = docker_sandbox.run(job("sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"))
    assert interfaces.stdout == b"lo\n"


@pytest.mark.docker
def test_docker_root_is_read_only_and_tmp_is_writable(docker_sandbox):
    script = "echo x > /etc/x; echo etc=$?; echo y > /tmp/y && cat /tmp/y; id -u; id -g"
    result = docker_sandbox.run(job("sh", "-c", script))
    assert result.stdout.split() == [b"etc=1", b"y", b"65534", b"65534"]
    assert b"Read-only file system" in result.stderr


@pytest.mark.docker
def test_docker_only_out_is_writable(docker_sandbox, out_dir):
    marker = f"dai-escape-{os.getpid()}-{time.monotonic_ns()}"
    script = (
        f"echo x > /{marker}; echo root=$?; echo x > /etc/{marker}; echo etc=$?;"
        f" echo x > /out/../{marker}; echo dotdot=$?; echo x > /out/{marker}; echo out=$?;"
        " id -u; grep ' /out ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1"
    )
    result = docker_sandbox.run(job("sh", "-c", script, out_dir=str(out_dir)))
    assert result.stdout.split() == [
        b"root=1", b"etc=1", b"dotdot=1", b"out=0", b"65534", b"rw",
    ]
    assert b"Read-only file system" in result.stderr
    assert result.out_entries == (OutEntry(marker.encode(), "file", 2, hashlib.sha256(b"x\n").digest(), True),)
    # Nothing reached the host outside out_dir: not beside it, nor at the paths the job tried.
    assert sorted(p.name for p in out_dir.parent.iterdir()) == ["out"]
    assert [p.name for p in out_dir.iterdir()] == [marker]
    for where in ("/", "/etc", "/tmp"):
        assert not os.path.lexists(os.path.join(where, marker))


@pytest.mark.docker
def test_docker_without_out_dir_has_no_out(docker_sandbox):
    result = docker_sandbox.run(job("sh", "-c", "test -e /out; echo $?; echo x > /out; echo $?"))
    assert result.stdout.split() == [b"1", b"1"]


@pytest.mark.docker
async def test_docker_stdin_from_concurrent_trio_threads(docker_sandbox):
    # Each attach takes a connection of the SDK's pool; none may leak into another job.
    results: list[RunResult] = []
    inputs = [big_stdin(64 << 10) + str(i).encode() for i in range(6)]

    async def one(data: bytes) -> None:
        req = job("sh", "-c", "cat | sha256sum", stdin=data)
        results.append(await trio.to_thread.run_sync(docker_sandbox.run, req))

    async with trio.open_nursery() as nursery:
        for data in inputs:
            nursery.start_soon(one, data)
    expected = sorted(f"{sha256(data)}  -\n".encode() for data in inputs)
    assert sorted(r.stdout for r in results) == expected


@pytest.mark.docker
def test_docker_oom_is_reported(docker_sandbox):
    # busybox tail buffers its last lines; /dev/zero has none, so it allocates until killed.
    result, elapsed = timed_run(docker_sandbox, job("tail", "/dev/zero", memory_mb=32, timeout_s=20))
    assert result.oom_killed
    assert result.exit_code == 137
    assert not result.timed_out
    assert elapsed < PROMPT_S


@pytest.mark.docker
def test_docker_pids_limit_holds(docker_sandbox):
    script = "i=0; while [ $i -lt 30 ]; do sleep 10 & i=$((i+1)); done; echo spawned"
    result = docker_sandbox.run(job("sh", "-c", script, pids_limit=8, timeout_s=20))
    assert b"can't fork" in result.stderr


@pytest.mark.docker
def test_docker_hostname_is_fixed(docker_sandbox):
    # The default hostname is the container id, which would differ between executors.
    assert docker_sandbox.run(job("hostname")).stdout == b"sandbox\n"


@pytest.mark.docker
def test_docker_missing_image(docker_sandbox):
    missing = "distributeai-test/no-such-image:none"
    assert not docker_sandbox.has_image(missing)
    assert docker_sandbox.has_image(IMAGE)
    with pytest.raises(SandboxError) as err:
        docker_sandbox.run(RunRequest(image=missing, command=["true"]))
    assert err.value.reason == "image_missing"


@pytest.mark.docker
def test_docker_leaves_no_containers(docker_host, docker_sandbox):
    import docker

    docker_sandbox.run(job("true"))
    docker_sandbox.run(job("sleep", "30", timeout_s=0.5))
    docker_sandbox.run(job("sleep", "30", timeout_s=0.5, stdin=big_stdin()))
    docker_sandbox.run(job("no-such-program-dai", stdin=b"x"))  # start fails after the attach
    client = docker.DockerClient(base_url=docker_host)
    try:
        label = ",".join(f"{k}={v}" for k, v in LABELS.items())
        assert client.containers.list(all=True, filters={"label": label.split(",")}) == []
    finally:
        client.close()


def test_docker_unreachable_daemon(tmp_path):
    sb = open_sandbox("docker", docker_host=f"unix://{tmp_path}/no.sock", log=quiet)
    for call in (sb.check, lambda: sb.has_image(IMAGE), lambda: sb.run(job("true"))):
        with pytest.raises(SandboxError) as err:
            call()
        assert err.value.reason == "daemon_unreachable"
    sb.close()


# ---- process only -----------------------------------------------------------------------------


def test_process_env_is_isolated(process_sandbox, monkeypatch):
    monkeypatch.setenv("DAI_HOST_SECRET", "leak")
    result = process_sandbox.run(job("env", env={"FOO": "bar"}))
    assert sorted(result.stdout.splitlines()) == [b"FOO=bar", b"PATH=/usr/local/bin:/usr/bin:/bin"]


def test_process_path_can_be_overridden(process_sandbox):
    result = process_sandbox.run(job("/usr/bin/env", env={"PATH": "/bin"}))
    assert result.stdout == b"PATH=/bin\n"


def test_process_runs_in_fresh_temp_dir_removed_after(process_sandbox):
    result = process_sandbox.run(job("sh", "-c", "pwd; ls -A; echo x > f && cat f"))
    cwd, *rest = result.stdout.decode().splitlines()
    assert os.path.basename(cwd).startswith("dai-job-")
    assert rest == ["x"]  # empty before the job wrote f
    assert not os.path.exists(cwd)


def test_process_out_dir_is_passed_as_env(process_sandbox, out_dir):
    # $OUT_DIR is the job's stage beside out_dir (outdir.OutStage), removed after the run.
    env = {"OUT_DIR": "/somewhere/else", "FOO": "bar"}
    result = process_sandbox.run(job("sh", "-c", 'echo "$OUT_DIR"; test -e /out; echo $?; echo x > "$OUT_DIR/f"',
                                     env=env, out_dir=str(out_dir)))
    stage, missing = result.stdout.split()
    assert os.path.dirname(stage) == str(out_dir.parent).encode() and missing == b"1"  # no /out is made
    assert os.path.basename(stage).startswith(b".stage-out-") and not os.path.exists(stage)
    assert (out_dir / "f").read_bytes() == b"x\n"


def test_process_memory_limit(process_sandbox):
    result, elapsed = timed_run(process_sandbox, job("tail", "/dev/zero", memory_mb=32, timeout_s=20))
    assert result.exit_code != 0
    assert not result.timed_out and not result.oom_killed
    assert elapsed < PROMPT_S


def test_process_warns_once_when_opened():
    messages: list[str] = []
    sb = open_sandbox("process", log=messages.append)
    sb.run(job("true"))
    sb.run(job("true"))
    assert len(messages) == 1
    assert "isolates nothing" in messages[0] and messages[0].startswith("WARNING")


def test_process_warns_through_a_logger(caplog):
    with caplog.at_level(logging.WARNING, logger="distributeai.sandbox"):
        open_sandbox("process")
    assert [r.levelname for r in caplog.records] == ["WARNING"]
