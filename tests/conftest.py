"""Shared pytest fixtures. Each section belongs to the package named in its header."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


# ==== docker (owned by sandbox/) =================================================================
# Tests marked @pytest.mark.docker take the `docker_host` fixture: a URL of a running dockerd that
# has the image alpine:latest (scripts/dockerd.sh builds a busybox one under that name).
# - DOCKER_HOST set and answering: use it.
# - else, under CI or DISTRIBUTEAI_REQUIRE_DOCKER=1: fail. CI never skips docker tests; its run
#   script starts the daemon (scripts/dockerd.sh start DIR) and exports DOCKER_HOST.
# - else: start (or reuse) a private dockerd in DOCKER_TEST_DIR and leave it running for the
#   next test run.

DOCKER_TEST_DIR = "/tmp/dai-docker-test"
DOCKER_TEST_IMAGE = "alpine:latest"
DOCKERD_START_TIMEOUT_S = 300  # a fresh machine may apt-get install docker.io first (~15 s here)


def _docker_problem(url: str) -> str | None:
    """Why the daemon at `url` cannot serve the docker tests, or None if it can."""
    import docker

    try:
        client = docker.DockerClient(base_url=url, timeout=10)
    except docker.errors.DockerException as e:
        return f"{url} does not answer: {e}"
    try:
        client.ping()
        client.images.get(DOCKER_TEST_IMAGE)
    except docker.errors.ImageNotFound:
        return f"{url} has no image {DOCKER_TEST_IMAGE} (scripts/dockerd.sh start builds one)"
    except Exception as e:  # noqa: BLE001 - any failure means: not usable, say why
        return f"{url} does not answer: {e}"
    finally:
        client.close()
    return None


@pytest.fixture(scope="session")
def docker_host() -> str:
    url = os.environ.get("DOCKER_HOST")
    problem = _docker_problem(url) if url else "DOCKER_HOST is not set"
    if problem is None:
        return url
    if os.environ.get("CI") or os.environ.get("DISTRIBUTEAI_REQUIRE_DOCKER") == "1":
        pytest.fail(f"docker tests are required here (CI / DISTRIBUTEAI_REQUIRE_DOCKER=1): {problem}")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "dockerd.sh"), "start", DOCKER_TEST_DIR],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DOCKERD_START_TIMEOUT_S,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("DOCKER_HOST="):
        pytest.fail(f"scripts/dockerd.sh start {DOCKER_TEST_DIR} failed:\n{proc.stdout}\n{proc.stderr}")
    url = lines[-1].partition("=")[2]
    problem = _docker_problem(url)
    if problem is not None:
        pytest.fail(problem)
    return url


# ==== end docker =================================================================================


# ==== bwrap (owned by sandbox/) ==================================================================
# Tests that run jobs in the bwrap sandbox take `bwrap_ready`: bubblewrap installed and able to
# build its sandbox here. Under CI or DISTRIBUTEAI_REQUIRE_BWRAP=1 a missing bwrap fails the test
# (scripts/setup.sh installs it); elsewhere it skips with the reason.


@pytest.fixture(scope="session")
def bwrap_ready() -> None:
    from distributeai.sandbox import SandboxError, open_sandbox

    from .netfixtures import missing

    try:
        open_sandbox("bwrap").check()
    except (SandboxError, ImportError) as e:
        missing(f"bwrap unusable: {e}", "DISTRIBUTEAI_REQUIRE_BWRAP")


# ==== end bwrap ==================================================================================
