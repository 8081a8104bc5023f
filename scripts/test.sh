#!/usr/bin/env bash
# Run the whole test suite: installs what is missing, starts a private dockerd (the Docker tests are
# never skipped here), runs pytest and then the fuzz run, stops the daemon. Extra arguments go to pytest
# (and skip the fuzz run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
DOCKER_DIR="${DISTRIBUTEAI_DOCKER_DIR:-/tmp/dai-docker-test}"
scripts/dockerd.sh start "$DOCKER_DIR" >/tmp/dai-dockerd-start.log
export DOCKER_HOST="unix://$DOCKER_DIR/docker.sock"
scripts/build-python-image.sh
scripts/build-python-image.sh --numpy   # examples/ai (tests/test_ai_example.py)
export DISTRIBUTEAI_REQUIRE_DOCKER=1 DISTRIBUTEAI_REQUIRE_BWRAP=1
trap 'scripts/dockerd.sh stop "$DOCKER_DIR" >/dev/null 2>&1 || true' EXIT
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "$@"  # the 30 slowest: where CI time goes
# The whole suite also runs the dedicated fuzz run (issue 7): 100,000 inputs for every decoder a
# peer or a user reaches (scripts/fuzz.sh; about 3 minutes on 2 cores). Its full JSON report is
# kept in .run/fuzz/report.json; a finding fails the run.
if [ $# -eq 0 ]; then
    mkdir -p .run
    scripts/fuzz.sh >.run/fuzz-report.json || { cat .run/fuzz-report.json; exit 1; }
    cp .run/fuzz-report.json .run/fuzz/report.json
    .venv/bin/python - .run/fuzz-report.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"fuzz: {r['inputs']:,} inputs over {len(r['decoders'])} decoders, {r['findings']} findings, {r['wall_s']} s")
PY
fi
