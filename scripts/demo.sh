#!/usr/bin/env bash
# Bring up a local network (a bootstrap and 3 nodes on 127.0.0.1, Docker sandbox), submit the demo
# job, print its verified result, and stop everything. Data lives in .run/demo (reset each run).
# `scripts/demo.sh --sandbox process` runs the jobs without Docker (unisolated).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
SANDBOX=docker
[ "${1:-}" = "--sandbox" ] && SANDBOX="${2:-docker}"
if [ "$SANDBOX" = docker ]; then
    DOCKER_DIR="${DISTRIBUTEAI_DOCKER_DIR:-/tmp/dai-docker}"
    scripts/dockerd.sh start "$DOCKER_DIR" >/dev/null
    export DOCKER_HOST="unix://$DOCKER_DIR/docker.sock"
fi
exec .venv/bin/distributeai devnet --nodes 3 --sandbox "$SANDBOX" --data-dir .run/demo --demo
