"""What the sandbox test modules share: the job helpers, and the fixtures that open each backend
(`sandbox` is parametrized over process, Docker and bubblewrap; Docker needs a real dockerd, bwrap
bubblewrap and cgroup v1, as conftest.py provides)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid

import pytest

from distributeai.sandbox import RunRequest, RunResult, open_sandbox
from distributeai.sandbox.outdir import STAGE_PREFIX

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


# ---- cancel: a run on a thread ---------------------------------------------------------------
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


def start_and_wait_running(sb, out_dir, script: str = "exec sleep 60", **kw) -> tuple[threading.Thread, dict, RunRequest]:
    """Start `script` (with a run_id) on a thread; return once the backend has started its job (the
    run's stopper is attached: the container, bwrap or process runs; white box, runs.py)."""
    req = job("sh", "-c", script, out_dir=str(out_dir), timeout_s=120, run_id=kw.pop("run_id", None) or run_id(), **kw)
    thread, box = run_in_thread(sb, req)
    assert sb._runs.wait_running(req.run_id, START_S), f"the job did not start within {START_S} s: {box}"
    return thread, box, req


# ---- /out stages ------------------------------------------------------------------------------


def stage_mounts(parent) -> list[str]:
    """Mount points of this host's mount namespace below `parent` (the stages beside an out_dir)."""
    prefix = str(parent).rstrip("/") + "/"
    with open("/proc/self/mountinfo", "rb") as f:
        points = [os.fsdecode(line.split()[4]) for line in f]
    return [p for p in points if p.startswith(prefix)]


def stages(parent) -> list[str]:
    return sorted(name for name in os.listdir(parent) if name.startswith(STAGE_PREFIX))
