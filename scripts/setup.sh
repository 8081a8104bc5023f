#!/usr/bin/env bash
# Install everything DistributeAI needs on a fresh Debian 12 machine, as root, idempotently:
#   - system packages: libgmp-dev (fastecdsa, a libp2p dependency, compiles against it), gcc and the
#     Python headers, docker.io and busybox-static (the Docker sandbox and its local image);
#   - a virtualenv in .venv with the project installed editable, with its test tools.
# Re-running it does nothing that is already done.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'setup.sh: %s\n' "$*" >&2; }

PY="${PYTHON:-python3}"
# libgmp-dev, gcc: fastecdsa (a libp2p dependency) compiles; docker.io, busybox-static: the Docker
# sandbox and its local image; bubblewrap, python3.11, python3-minimal: the bwrap sandbox and the
# local Python image; chromium, fonts-dejavu-core, prometheus, tmux: the tests of the stats page,
# the metrics and the terminal view drive the real programs; curl: the README's REST API lines are
# run as written.
PACKAGES=(libgmp-dev gcc docker.io busybox-static bubblewrap python3.11 python3-minimal
          chromium fonts-dejavu-core prometheus tmux curl)
# Debian's own interpreter needs its headers and venv module as packages; a pyenv build has both.
"$PY" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
    || PACKAGES+=(python3-dev)
"$PY" -c 'import ensurepip' 2>/dev/null || PACKAGES+=(python3-venv)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { log "need root to apt-get install ${missing[*]}"; exit 1; }
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Packages such as prometheus and docker.io would start their services on install, listening
    # beyond loopback; the project starts what it needs itself, so deny service starts meanwhile.
    policy_added=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_added=1
    fi
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    if [ -n "$policy_added" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

STAMP=.venv/.installed
WANT="$(cat pyproject.toml setup.py | sha256sum | cut -c1-64)"
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$PY" -m venv .venv
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    log "installing Python packages into .venv"
    if ! .venv/bin/pip install -q -e '.[test]' >.venv/pip.log 2>&1; then
        cat .venv/pip.log >&2
        log "pip install failed (log above, also in .venv/pip.log)"
        exit 1
    fi
    echo "$WANT" >"$STAMP"
fi
