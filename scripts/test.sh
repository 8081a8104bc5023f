#!/usr/bin/env bash
# Run the whole test suite: installs what is missing, starts a private dockerd (the Docker tests are
# never skipped here), runs pytest, stops the daemon. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
DOCKER_DIR="${DISTRIBUTEAI_DOCKER_DIR:-/tmp/dai-docker-test}"
scripts/dockerd.sh start "$DOCKER_DIR" >/tmp/dai-dockerd-start.log
export DOCKER_HOST="unix://$DOCKER_DIR/docker.sock"
scripts/build-python-image.sh
export DISTRIBUTEAI_REQUIRE_DOCKER=1 DISTRIBUTEAI_REQUIRE_BWRAP=1
trap 'scripts/dockerd.sh stop "$DOCKER_DIR" >/dev/null 2>&1 || true' EXIT
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
