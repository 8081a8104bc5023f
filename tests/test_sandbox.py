"""Tests of sandbox/: one conformance suite run against every argv backend (process, Docker,
bubblewrap), then what only one backend promises (Docker's isolation, the process backend's env
and workdir), then pure logic. The wasm backend runs modules, not argv: tests/test_sandbox_wasm.py.

Docker tests need a real dockerd (fixture `docker_host` in conftest.py), bwrap tests bubblewrap and
cgroup v1 (fixture `bwrap_ready`); nothing here fakes either.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import trio

from distributeai.sandbox import KINDS, RunRequest, RunResult, SandboxError, open_sandbox
from distributeai.sandbox.base import build_manifest
from distributeai.sandbox.docker_backend import LABELS, _exec_failure_code, _read_capped
from distributeai.sandbox.runs import EARLY_CANCELS, RunRegistry

IMAGE = "alpine:latest"  # on test machines: the busybox image scripts/dockerd.sh builds
HELLO = ["sh", "-c", "echo 'Hello' | sha256sum"]
HELLO_STDOUT = b"66a045b452102c59d840ec097d59d9467e13a3f34f6494e539ffd32c1bb35f18  -\n"
# A killed job must come back well within this, though its command would run for 30 s.
PROMPT_S = 15.0  # the wrong outcomes take 20-30 s (or show timed_out); on loaded CI cores docker alone can take seconds
MB = 1 << 20
# Where a job writes its files on every backend: /out, or $OUT_DIR on the process backend.
OUT = '"${OUT_DIR:-/out}"'


def job(*argv: str, **kw) -> RunRequest:
    return RunRequest(image=IMAGE, command=list(argv), **kw)


def quiet(_message: str) -> None:
    pass


@pytest.fixture(
    params=[
        "process",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("bwrap", marks=pytest.mark.bwrap),
    ]
)
def sandbox(request):
    if request.param == "docker":
        host = request.getfixturevalue("docker_host")
        sb = open_sandbox("docker", docker_host=host, log=logging.getLogger("test"))
    elif request.param == "bwrap":
        request.getfixturevalue("bwrap_ready")  # skips, or fails under CI / REQUIRE_BWRAP
        sb = open_sandbox("bwrap", log=logging.getLogger("test"))
    else:
        sb = open_sandbox("process", log=quiet)
    sb.check()
    yield sb
    sb.close()


@pytest.fixture
def docker_sandbox(docker_host):
    sb = open_sandbox("docker", docker_host=docker_host, log=logging.getLogger("test"))
    sb.check()
    yield sb
    sb.close()


@pytest.fixture
def process_sandbox():
    sb = open_sandbox("process", log=quiet)
    yield sb
    sb.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def big_stdin(size: int = MB) -> bytes:
    """Deterministic bytes that are not one repeated byte, so a lost or reordered chunk shows."""
    block = b"".join(i.to_bytes(4, "big") for i in range(1024))  # 4 KiB
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def out_dir(tmp_path):
    path = tmp_path / "out"
    path.mkdir()
    return path


def timed_run(sb, req: RunRequest) -> tuple[RunResult, float]:
    started = time.monotonic()
    result = sb.run(req)
    return result, time.monotonic() - started


# ---- conformance: every backend ---------------------------------------------------------------


def test_demo_hash_job(sandbox):
    result = sandbox.run(job(*HELLO))
    assert result.stdout == HELLO_STDOUT
    assert result.stderr == b""
    assert result.exit_code == 0
    assert not (result.timed_out or result.oom_killed)
    assert not (result.stdout_truncated or result.stderr_truncated)
    assert result.sandbox == sandbox.name
    assert 0 < result.duration_s < PROMPT_S


def test_nonzero_exit_and_separate_streams(sandbox):
    result = sandbox.run(job("sh", "-c", "echo out; echo err >&2; exit 3"))
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert not result.timed_out


def test_env_is_passed(sandbox):
    env = {"GREETING": "hi there", "EMPTY": ""}
    result = sandbox.run(job("sh", "-c", 'printf "%s|%s" "$GREETING" "$EMPTY"', env=env))
    assert result.stdout == b"hi there|"


def test_timeout_kills_job(sandbox):
    result, elapsed = timed_run(sandbox, job("sleep", "30", timeout_s=1))
    assert result.timed_out
    assert result.exit_code == 137  # SIGKILL
    assert not result.oom_killed
    assert 0.9 <= result.duration_s < PROMPT_S
    assert elapsed < PROMPT_S


def test_timeout_kills_background_children(sandbox):
    # The children hold stdout open: the backend must kill them, not wait for EOF.
    result, elapsed = timed_run(sandbox, job("sh", "-c", "sleep 30 & sleep 30 & wait", timeout_s=1))
    assert result.timed_out
    assert elapsed < PROMPT_S


def test_exit_of_main_process_ends_job(sandbox):
    # A detached grandchild keeps the pipes open; the job still ends with its main process.
    result, elapsed = timed_run(sandbox, job("sh", "-c", "(sleep 30 &); echo done", timeout_s=20))
    assert (result.exit_code, result.stdout, result.timed_out) == (0, b"done\n", False)
    assert elapsed < PROMPT_S


def test_stdout_over_cap_is_truncated_to_exactly_cap(sandbox):
    result = sandbox.run(job("head", "-c", "100000", "/dev/zero", output_cap=1000))
    assert result.stdout == b"\0" * 1000
    assert result.stdout_truncated
    assert not result.stderr_truncated
    assert result.exit_code == 0


def test_stderr_over_cap_is_truncated_independently(sandbox):
    result = sandbox.run(job("sh", "-c", "echo small; head -c 5000 /dev/zero >&2", output_cap=100))
    assert (result.stdout, result.stdout_truncated) == (b"small\n", False)
    assert (len(result.stderr), result.stderr_truncated) == (100, True)


def test_output_of_exactly_cap_is_not_truncated(sandbox):
    result = sandbox.run(job("head", "-c", "1000", "/dev/zero", output_cap=1000))
    assert (len(result.stdout), result.stdout_truncated) == (1000, False)


def test_large_output_keeps_the_head(sandbox):
    # 3 MB through the default 1 MiB cap: the first bytes are kept, in order.
    script = "i=0; while [ $i -lt 3000 ]; do printf '%01023d\\n' $i; i=$((i+1)); done"
    result = sandbox.run(job("sh", "-c", script))
    assert result.stdout_truncated
    assert len(result.stdout) == 1 << 20
    assert result.stdout.startswith(b"0" * 1023 + b"\n" + b"0" * 1022 + b"1\n")
    assert result.exit_code == 0


def test_zero_cap_keeps_nothing(sandbox):
    result = sandbox.run(job("echo", "x", output_cap=0))
    assert (result.stdout, result.stdout_truncated) == (b"", True)


def test_missing_executable_is_a_job_failure(sandbox):
    result = sandbox.run(job("no-such-program-dai"))
    assert result.exit_code == 127
    assert result.stderr == b"sandbox: cannot execute no-such-program-dai: not found\n"


async def test_runs_concurrently_from_trio_threads(sandbox):
    results: list[RunResult] = []

    async def one(i: int) -> None:
        req = job("sh", "-c", f"echo {i}")
        results.append(await trio.to_thread.run_sync(sandbox.run, req))

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(one, i)
    assert sorted(r.stdout for r in results) == [b"0\n", b"1\n", b"2\n", b"3\n"]


# ---- conformance: stdin -----------------------------------------------------------------------


def test_stdin_round_trip(sandbox):
    result = sandbox.run(job("sh", "-c", "cat | sha256sum", stdin=b"Hello\n"))
    assert (result.exit_code, result.stdout, result.stderr) == (0, HELLO_STDOUT, b"")


def test_large_stdin_arrives_whole_and_in_order(sandbox):
    data = big_stdin()
    result = sandbox.run(job("sh", "-c", "cat | sha256sum", stdin=data, timeout_s=20))
    assert result.stdout == f"{sha256(data)}  -\n".encode()


def test_empty_stdin_is_eof_at_once(sandbox):
    # A job reading stdin must not wait for input that never comes (the timeout would show it).
    result, elapsed = timed_run(sandbox, job("sh", "-c", "cat; wc -c", timeout_s=10))
    assert (result.exit_code, result.stdout.split(), result.timed_out) == (0, [b"0"], False)
    assert elapsed < PROMPT_S


@pytest.mark.parametrize(
    "script", ["true", "sleep 0.3; echo done", "exec 0<&-; sleep 0.3; echo done"]
)
def test_job_that_ignores_large_stdin_returns(sandbox, script):
    # 1 MB is far more than a pipe holds: the writer blocks until the job exits.
    result, elapsed = timed_run(sandbox, job("sh", "-c", script, stdin=big_stdin(), timeout_s=20))
    assert (result.exit_code, result.timed_out) == (0, False)
    assert result.stdout == (b"" if script == "true" else b"done\n")
    assert elapsed < PROMPT_S


def test_job_that_reads_part_of_stdin(sandbox):
    result = sandbox.run(job("head", "-c", "5", stdin=b"abcdefgh" * MB, timeout_s=20))
    assert (result.exit_code, result.stdout) == (0, b"abcde")


def test_timeout_with_unread_stdin(sandbox):
    result, elapsed = timed_run(sandbox, job("sleep", "30", stdin=big_stdin(), timeout_s=1))
    assert result.timed_out and result.exit_code == 137
    assert elapsed < PROMPT_S


# ---- conformance: out_dir and manifest -----------------------------------------------------------


def test_files_in_out_dir_are_listed(sandbox, out_dir):
    script = (
        f"cd {OUT} && mkdir -p a/b empty && printf hello > a/b/deep.txt && printf x > top"
        " && head -c 100000 /dev/zero > a/zeros && : > a/nothing"
    )
    result = sandbox.run(job("sh", "-c", script, out_dir=str(out_dir)))
    assert (result.exit_code, result.stderr) == (0, b"")
    assert result.manifest == (
        ("a/b/deep.txt", 5, sha256(b"hello")),
        ("a/nothing", 0, sha256(b"")),
        ("a/zeros", 100000, sha256(b"\0" * 100000)),
        ("top", 1, sha256(b"x")),
    )
    assert not result.out_truncated
    assert (out_dir / "a" / "b" / "deep.txt").read_bytes() == b"hello"


def test_symlinks_in_out_dir_are_not_followed(sandbox, out_dir):
    # On the host, /etc/passwd and /etc are the host's own: the manifest must not read them.
    script = f"cd {OUT} && ln -s /etc/passwd passwd && ln -s /etc etc && printf ok > real"
    result = sandbox.run(job("sh", "-c", script, out_dir=str(out_dir)))
    assert result.exit_code == 0
    assert result.manifest == (("real", 2, sha256(b"ok")),)
    assert (out_dir / "passwd").is_symlink() and (out_dir / "etc").is_symlink()


def test_out_cap_exceeded_truncates_manifest(sandbox, out_dir):
    script = f"cd {OUT} && head -c 600 /dev/zero > a && head -c 600 /dev/zero > b"
    result = sandbox.run(job("sh", "-c", script, out_dir=str(out_dir), out_cap=1000))
    assert result.out_truncated
    assert result.manifest == (("a", 600, sha256(b"\0" * 600)),)


def test_out_of_exactly_cap_is_not_truncated(sandbox, out_dir):
    script = f"cd {OUT} && head -c 500 /dev/zero > a && head -c 500 /dev/zero > b"
    result = sandbox.run(job("sh", "-c", script, out_dir=str(out_dir), out_cap=1000))
    assert not result.out_truncated
    assert [name for name, _, _ in result.manifest] == ["a", "b"]


def test_relative_out_dir(sandbox, out_dir, monkeypatch):
    monkeypatch.chdir(out_dir.parent)
    result = sandbox.run(job("sh", "-c", f"printf 1 > {OUT}/f", out_dir="out"))
    assert result.manifest == (("f", 1, sha256(b"1")),)


def test_no_out_dir_no_manifest(sandbox):
    result = sandbox.run(job("true"))
    assert (result.manifest, result.out_truncated) == ((), False)


def test_missing_out_dir_is_rejected(sandbox, tmp_path):
    with pytest.raises(SandboxError) as err:
        sandbox.run(job("true", out_dir=str(tmp_path / "missing")))
    assert err.value.reason == "invalid_request"
    assert not (tmp_path / "missing").exists()


# ---- conformance: pull and cancel --------------------------------------------------------------
# A started job says so through a FIFO in its out_dir (written by the job, read here with a
# deadline): the cancel below hits a job that is running, not one that has yet to start.
START_S = 60.0  # bound for a job to start; Docker under load can take seconds


def run_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def run_in_thread(sb, req: RunRequest) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = sb.run(req)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    thread = threading.Thread(target=target, name="test-run", daemon=True)
    thread.start()
    return thread, box


def start_and_wait_running(sb, out_dir, **kw) -> tuple[threading.Thread, dict, RunRequest]:
    """Start `sleep 60` (with run_id) on a thread; return once the job has signalled it runs."""
    fifo = out_dir / "started"
    os.mkfifo(fifo)
    os.chmod(fifo, 0o666)  # the job's uid is 65534 on docker and bwrap
    req = job("sh", "-c", f"echo up > {OUT}/started; exec sleep 60", out_dir=str(out_dir), timeout_s=120, **kw)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists: the job's open does not block
    try:
        thread, box = run_in_thread(sb, req)
        ready, _, _ = select.select([fd], [], [], START_S)
        assert ready, f"the job did not start within {START_S} s: {box}"
        assert os.read(fd, 16) == b"up\n"
    finally:
        os.close(fd)
    return thread, box, req


def test_pull_of_an_image_at_hand_returns(sandbox):
    sandbox.pull(IMAGE)  # present (docker) or ignored (bwrap, process): no registry is asked
    assert sandbox.has_image(IMAGE)


def test_cancel_stops_a_running_job_promptly(sandbox, out_dir):
    rid = run_id()
    thread, box, req = start_and_wait_running(sandbox, out_dir, run_id=rid)
    # While it runs, its run_id is taken.
    with pytest.raises(SandboxError) as dup:
        sandbox.run(job("true", run_id=rid))
    assert dup.value.reason == "invalid_request"
    cancelled_at = time.monotonic()
    sandbox.cancel(rid)
    thread.join(PROMPT_S)
    assert not thread.is_alive(), "run() did not return after cancel"
    assert time.monotonic() - cancelled_at < PROMPT_S
    assert isinstance(box.get("error"), SandboxError), box
    assert box["error"].reason == "cancelled"
    sandbox.cancel(rid)  # again, after the end: nothing happens
    assert sandbox.run(job("echo", "after", run_id=run_id())).stdout == b"after\n"


def test_cancel_before_the_run_means_it_never_starts(sandbox, out_dir):
    rid = run_id()
    sandbox.cancel(rid)  # overtakes the run: remembered for it
    with pytest.raises(SandboxError) as err:
        sandbox.run(job("sh", "-c", f"echo ran > {OUT}/ran", out_dir=str(out_dir), run_id=rid))
    assert err.value.reason == "cancelled"
    assert not (out_dir / "ran").exists()


def test_cancel_of_an_ended_or_unknown_run_changes_nothing(sandbox):
    rid = run_id()
    result = sandbox.run(job("echo", "x", run_id=rid))
    sandbox.cancel(rid)
    sandbox.cancel(rid)
    assert (result.exit_code, result.stdout) == (0, b"x\n")
    assert sandbox.run(job("echo", "y", run_id=run_id())).stdout == b"y\n"
    assert sandbox.run(job("echo", "z")).stdout == b"z\n"  # no run_id: cannot be cancelled, runs


def test_cancel_of_one_run_leaves_the_others(sandbox, out_dir):
    thread, box, req = start_and_wait_running(sandbox, out_dir, run_id=run_id())
    sandbox.cancel(run_id())  # an unrelated id
    result = sandbox.run(job("echo", "alive", run_id=run_id()))
    assert result.stdout == b"alive\n"
    assert thread.is_alive()  # still sleeping: nothing cancelled it
    sandbox.cancel(req.run_id)
    thread.join(PROMPT_S)
    assert not thread.is_alive()
    assert box["error"].reason == "cancelled"


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
    assert result.manifest == ((marker, 2, sha256(b"x\n")),)
    # Nothing reached the host outside out_dir: not beside it, nor at the paths the job tried.
    assert sorted(p.name for p in out_dir.parent.iterdir()) == ["out"]
    assert [p.name for p in out_dir.iterdir()] == [marker]
    for where in ("/", "/etc", "/tmp"):
        assert not os.path.lexists(os.path.join(where, marker))
    assert (os.stat(out_dir).st_uid, os.stat(out_dir).st_gid) == (65534, 65534)


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
    env = {"OUT_DIR": "/somewhere/else", "FOO": "bar"}
    result = process_sandbox.run(job("sh", "-c", 'echo "$OUT_DIR"; test -e /out; echo $?',
                                     env=env, out_dir=str(out_dir)))
    assert result.stdout.split() == [str(out_dir).encode(), b"1"]  # no /out is made


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


# ---- pure logic -------------------------------------------------------------------------------


def test_unknown_kind_names_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        open_sandbox("vm")
    assert all(kind in str(err.value) for kind in KINDS)


@pytest.mark.parametrize(
    "bad",
    [
        {"command": []},
        {"command": "echo hi"},
        {"command": ["a\0b"]},
        {"env": {"A=B": "x"}},
        {"env": {"A": 1}},
        {"cpu": 0},
        {"memory_mb": 1},
        {"timeout_s": 0},
        {"pids_limit": 0},
        {"output_cap": -1},
    ],
)
def test_run_request_rejects_nonsense(bad):
    fields = {"image": IMAGE, "command": ["true"], **bad}
    with pytest.raises(ValueError):
        RunRequest(**fields)


def test_run_request_defaults():
    req = RunRequest(image=IMAGE, command=["true"])
    assert (req.env, req.cpu, req.memory_mb, req.timeout_s, req.pids_limit, req.output_cap) == (
        {}, 1.0, 256, 60.0, 64, 1 << 20,
    )


def test_build_manifest_lists_only_regular_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"abc")
    (tmp_path / "link").symlink_to("/etc/passwd")
    (tmp_path / "dirlink").symlink_to("/etc")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "fifo")  # opening it would block the node
    assert build_manifest(str(tmp_path), 1 << 20) == ((("d/f", 3, sha256(b"abc")),), False)
    assert build_manifest(None, 0) == ((), False)


class FakeStream:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.read = 0
        self.closed = False

    def __iter__(self):
        for chunk in self.chunks:
            self.read += 1
            yield chunk

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "chunks, cap, kept, truncated",
    [
        ([b"abc", b"def"], 6, b"abcdef", False),
        ([b"abc", b"def"], 5, b"abcde", True),
        ([b"abc", b"", b"def"], 3, b"abc", True),
        ([b"", b""], 0, b"", False),
        ([b"x"], 0, b"", True),
    ],
)
def test_read_capped(chunks, cap, kept, truncated):
    stream = FakeStream(chunks)
    assert _read_capped(stream, cap) == (kept, truncated)
    assert stream.closed


def test_read_capped_stops_reading_past_cap():
    stream = FakeStream([b"ab", b"cd", b"ef", b"gh"])
    assert _read_capped(stream, 3) == (b"abc", True)
    assert stream.read == 2


@pytest.mark.parametrize(
    "explanation, code",
    [
        ('exec: "nosuch": executable file not found in $PATH: unknown', 127),
        ('exec: "/etc/x": stat /etc/x: no such file or directory: unknown', 127),
        ('exec: "/etc/passwd": permission denied: unknown', 126),
        ("cgroup mountpoint does not exist", None),
    ],
)
def test_exec_failure_codes(explanation, code):
    assert _exec_failure_code(explanation) == code


@pytest.mark.docker
def test_pull_without_a_registry_says_image_missing(docker_host):
    from distributeai.sandbox.docker_backend import DockerSandbox

    sandbox = DockerSandbox(docker_host=docker_host, log=lambda _: None)
    try:
        with pytest.raises(SandboxError) as e:
            sandbox.pull("127.0.0.1:1/distributeai-test/nowhere:1")
        assert e.value.reason == "image_missing"
    finally:
        sandbox.close()


# ---- pure logic: run tracking (runs.py) ---------------------------------------------------------


def test_registry_calls_the_stopper_of_a_running_run_once_per_cancel():
    runs, stopped = RunRegistry(), []
    with runs.track("a") as handle:
        handle.attach(lambda: stopped.append("a"))
        runs.cancel("a")
        assert stopped == ["a"] and handle.cancelled.is_set()
        with pytest.raises(SandboxError) as err:
            handle.raise_if_cancelled()
        assert err.value.reason == "cancelled"
    runs.cancel("a")  # ended: no stopper, no error... but remembered as an early cancel
    assert stopped == ["a"]


def test_registry_stops_a_job_attached_after_its_cancel():
    runs, stopped = RunRegistry(), []
    with runs.track("b") as handle:
        runs.cancel("b")  # before the job runs
        handle.attach(lambda: stopped.append("b"))
        assert stopped == ["b"]


def test_registry_never_calls_a_detached_stopper():
    runs, stopped = RunRegistry(), []
    with runs.track("c") as handle:
        handle.attach(lambda: stopped.append("c"))
        handle.detach()  # the job ended; its pid may be reused from now on
        runs.cancel("c")
    assert stopped == []


def test_registry_remembers_early_cancels_up_to_a_bound():
    runs = RunRegistry()
    runs.cancel("early")
    with runs.track("early") as handle:
        assert handle.cancelled.is_set()
    with runs.track("early") as handle:  # used up by the first run
        assert not handle.cancelled.is_set()
    for i in range(EARLY_CANCELS + 1):
        runs.cancel(f"id-{i}")
    with runs.track("id-0") as handle:  # the oldest was dropped
        assert not handle.cancelled.is_set()
    with runs.track(f"id-{EARLY_CANCELS}") as handle:
        assert handle.cancelled.is_set()


def test_registry_refuses_a_run_id_in_use_and_ignores_none():
    runs = RunRegistry()
    with runs.track("d"):
        with pytest.raises(SandboxError) as err:
            with runs.track("d"):
                pass
        assert err.value.reason == "invalid_request"
        with runs.track(None) as a, runs.track(None) as b:  # untracked runs never clash
            assert a is not b
    with runs.track("d"):  # free again
        pass


def test_registry_a_failing_stopper_is_not_the_cancellers_error():
    runs = RunRegistry()

    def gone() -> None:
        raise ProcessLookupError("already exited")

    with runs.track("e") as handle:
        handle.attach(gone)
        runs.cancel("e")  # does not raise
        assert handle.cancelled.is_set()


def test_wait_running_times_out_for_an_unknown_run():
    assert RunRegistry().wait_running("nobody", 0.01) is False


@pytest.mark.parametrize("bad", ["", "x" * 201, "a\0b", 5])
def test_run_request_rejects_bad_run_ids(bad):
    with pytest.raises(ValueError):
        RunRequest(image=IMAGE, command=["true"], run_id=bad)


def test_sandbox_error_reasons_are_a_closed_set():
    assert SandboxError("cancelled").reason == "cancelled"
    with pytest.raises(ValueError):
        SandboxError("image is not there")  # a sentence is not a code
