"""What the sandbox test modules share: the job helpers, and the fixtures that open each backend
(`sandbox` is parametrized over process, Docker and bubblewrap; Docker needs a real dockerd, bwrap
bubblewrap and cgroup v1, as conftest.py provides)."""

from __future__ import annotations

import hashlib
import logging
import time

import pytest

from distributeai.sandbox import RunRequest, RunResult, open_sandbox

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
