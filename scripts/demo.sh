#!/usr/bin/env bash
# Bring up a local network (a bootstrap with its stats page and 3 nodes on 127.0.0.1, Docker
# sandbox), submit the demo job, print its verified result and the page's URL, and keep running
# until Ctrl-C, which stops every process this script started (the Docker daemon too, if this
# script started it). Data lives in .run/demo, reset on each run; the private Docker daemon keeps
# its state in /tmp/dai-docker. `scripts/demo.sh --sandbox bwrap|process` runs without Docker;
# `scripts/demo.sh --once` stops right after printing the result.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
SANDBOX=docker
KEEP=--keep
while [ $# -gt 0 ]; do
    case "$1" in
        --sandbox) SANDBOX="${2:?--sandbox needs a value}"; shift 2 ;;
        --once) KEEP=""; shift ;;
        *) echo "usage: $0 [--sandbox docker|bwrap|process] [--once]" >&2; exit 2 ;;
    esac
done
if [ "$SANDBOX" = docker ]; then
    DOCKER_DIR="${DISTRIBUTEAI_DOCKER_DIR:-/tmp/dai-docker}"
    export DOCKER_HOST="unix://$DOCKER_DIR/docker.sock"
    if ! timeout 10 docker -H "$DOCKER_HOST" info >/dev/null 2>&1; then
        trap 'scripts/dockerd.sh stop "$DOCKER_DIR" >/dev/null 2>&1 || true' EXIT
    fi
    scripts/dockerd.sh start "$DOCKER_DIR" >/dev/null
fi
.venv/bin/distributeai devnet --nodes 3 --sandbox "$SANDBOX" --data-dir .run/demo --demo $KEEP
