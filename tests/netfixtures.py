"""Helpers for tests that run real networks of processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DEMO_STDOUT = "66a045b452102c59d840ec097d59d9467e13a3f34f6494e539ffd32c1bb35f18  -\n"
DEMO_ARGS = ["--image", "alpine:latest", "--cmd", "sh", "-c", "echo 'Hello' | sha256sum"]


# A safety net, not a speed check: `submit` itself waits up to the job's timeout + 120 s (180 s
# by default), and a loaded 2-core CI machine can be slow; a deadline costs nothing when it works.
def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distributeai.cli.main", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def submit_json(data_dir: Path, *args: str) -> tuple[dict, float]:
    """Submit through the CLI and return its JSON outcome and the submit->verified wall time."""
    started = time.monotonic()
    out = cli("submit", "--data-dir", str(data_dir), "--json", *args)
    elapsed = time.monotonic() - started
    assert out.stdout, f"submit printed nothing; stderr:\n{out.stderr}"
    return json.loads(out.stdout), elapsed


def wait_for(check, timeout: float, what: str):
    """Poll `check()` until it returns a truthy value; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # each round observes the system afresh; the deadline bounds the wait


def missing(why: str, require_env: str | None = None) -> None:
    """A program a test needs is not usable: under CI (or with `require_env`=1) that is a failure,
    because CI installs and starts everything its tests need; elsewhere the test is skipped."""
    import os

    import pytest

    if os.environ.get("CI") or (require_env and os.environ.get(require_env) == "1"):
        pytest.fail(f"required here: {why}")
    pytest.skip(why)


@contextmanager
def sandbox_devnet(request, tmp_path_factory, name: str, nodes: int = 3) -> Iterator:
    """A running devnet (a bootstrap and `nodes` node processes, connected) in the sandbox named by
    a fixture's `request.param`: "docker" (the session's dockerd, `docker_host`) or "bwrap"
    (`bwrap_ready`), for module fixtures parametrized over both."""
    from distributeai.tools.devnet import Devnet

    host = None
    if request.param == "docker":
        host = request.getfixturevalue("docker_host")
    else:
        request.getfixturevalue("bwrap_ready")
    with Devnet(tmp_path_factory.mktemp(f"{name}-{request.param}") / "net", nodes=nodes, sandbox=request.param,
                docker_host=host) as net:
        net.start()
        net.wait_connected()
        yield net
