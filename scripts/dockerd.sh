#!/usr/bin/env bash
# A private Docker daemon for job sandboxes, on machines without a registry (see
# docs/sandbox.md and sandbox/README.md).
#
#   scripts/dockerd.sh start DIR   start (or reuse) a dockerd whose state lives in DIR, make sure the
#                                  local busybox image alpine:latest exists, and print
#                                  DOCKER_HOST=unix://DIR/docker.sock as the last line
#   scripts/dockerd.sh stop DIR    stop that dockerd (SIGTERM by pid, bounded wait) and unmount what
#                                  it left mounted under DIR
#
# The daemon touches no iptables and makes no bridge; jobs run with network_mode=none anyway.
# Idempotent: installs docker.io and busybox-static with apt-get when missing (CI runs on fresh
# machines), reuses a running daemon of the same DIR, cleans up after one that was killed.
# Keep DIR short (like /tmp/dai-docker): containerd puts unix sockets under DIR/exec and a socket
# path has at most 107 bytes.
set -euo pipefail

readonly READY_TIMEOUT_S=30   # notes measured 0.2-0.4 s to ready; 30 s covers a loaded CI machine
readonly STOP_TIMEOUT_S=30    # dockerd gives running containers 15 s (its default) before it kills them
readonly MAX_DIR_LEN=60       # DIR/exec/containerd/containerd.sock.ttrpc must stay under 108 bytes
readonly IMAGE=alpine:latest  # the name job specs already use; served here by a busybox image
readonly HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly DOCKERFILE="$HERE/../sandbox/images/busybox.Dockerfile"

log() { printf 'dockerd.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}

# Install docker.io and busybox-static unless present. Only the static busybox can go into a
# FROM-scratch image, so the package (not just any busybox on PATH) is what is checked.
ensure_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' \
        || missing+=(busybox-static)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "need root to apt-get install ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# The pid in DIR/docker.pid if that process is alive and is a dockerd; empty otherwise.
daemon_pid() {
    local pidfile="$DIR/docker.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    [ -r "/proc/$pid/cmdline" ] || return 0
    # A recycled pid must not be taken for our daemon: check the program and its data root.
    if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "dockerd.*--data-root $DIR/data"; then
        echo "$pid"
    fi
}

answers() {
    timeout 10 docker -H "unix://$DIR/docker.sock" info >/dev/null 2>&1
}

# Unmount, deepest first, whatever is still mounted under DIR (the data root's bind mount,
# overlay mounts of containers a killed daemon left behind).
unmount_leftovers() {
    local mnt
    awk -v d="$DIR/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r mnt; do
        log "unmounting $mnt"
        umount "$mnt" 2>/dev/null || umount -l "$mnt" || log "could not unmount $mnt"
    done
}

# After a daemon was killed (SIGKILL, end of a session), its containers, shims and containerd may
# live on and make the next daemon's containerd hang at startup. Remove them: runc deletes the
# containers it still knows of (killing their processes), then the containerd and shims of DIR/exec.
kill_leftovers() {
    local root id p
    if command -v runc >/dev/null 2>&1; then
        for root in "$DIR"/exec/runtime-runc/*; do
            [ -d "$root" ] || continue
            for id in $(runc --root "$root" list -q 2>/dev/null); do
                log "removing leftover container $id"
                runc --root "$root" delete --force "$id" >/dev/null 2>&1 || true
            done
        done
    fi
    local killed=() deadline
    for p in /proc/[0-9]*; do
        case "$(cat "$p/comm" 2>/dev/null)" in containerd*) ;; *) continue ;; esac
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$DIR/exec/"; then
            log "killing leftover process ${p#/proc/}: $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-80)"
            kill -KILL "${p#/proc/}" 2>/dev/null && killed+=("${p#/proc/}")
        fi
    done
    deadline=$((SECONDS + 5))
    for p in "${killed[@]}"; do
        while [ -e "/proc/$p" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$p/status" 2>/dev/null \
            && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
    done
    # dockerd reuses the containerd named in this file while that pid exists, and an unreaped
    # zombie exists: it then waits for a socket that never comes and gives up after 15 s.
    rm -f "$DIR/exec/containerd/containerd.pid"
}

wait_ready() {
    local pid="$1" deadline=$((SECONDS + READY_TIMEOUT_S))
    until answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$DIR/dockerd.log" >&2 || true
            die "dockerd exited during startup (log: $DIR/dockerd.log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$DIR/dockerd.log" >&2 || true
            die "dockerd did not answer within ${READY_TIMEOUT_S}s (log: $DIR/dockerd.log)"
        fi
        sleep 0.2
    done
}

ensure_image() {
    local host="unix://$DIR/docker.sock" ctx busybox
    if docker -H "$host" image inspect "$IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    busybox="$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n 1)"
    [ -x "$busybox" ] || die "busybox-static installed no /bin/busybox"
    [ -f "$DOCKERFILE" ] || die "missing $DOCKERFILE"
    ctx="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand $ctx now
    trap "rm -rf '$ctx'" RETURN
    cp "$busybox" "$ctx/busybox"
    cp "$DOCKERFILE" "$ctx/Dockerfile"
    log "building $IMAGE from $busybox"
    # The classic builder: a 20.10 daemon and a client without buildx agree on it, and the build's
    # one RUN step needs no network (the daemon has no bridge).
    DOCKER_BUILDKIT=0 docker -H "$host" build --network none -q -t "$IMAGE" "$ctx" >&2 \
        || die "building $IMAGE failed"
}

start() {
    ensure_packages
    mkdir -p "$DIR"
    local pid
    pid="$(daemon_pid)"
    if [ -n "$pid" ]; then
        log "reusing dockerd $pid of $DIR"
        wait_ready "$pid"
    else
        rm -f "$DIR/docker.pid"
        kill_leftovers
        unmount_leftovers
        # setsid + no inherited descriptors: the daemon outlives this script and never holds the
        # caller's pipes open (a test runner capturing our output would wait for it otherwise).
        setsid dockerd --iptables=false --ip6tables=false --bridge=none \
            --data-root "$DIR/data" --exec-root "$DIR/exec" \
            --host "unix://$DIR/docker.sock" --pidfile "$DIR/docker.pid" \
            </dev/null >"$DIR/dockerd.log" 2>&1 &
        pid=$!
        log "started dockerd $pid (log: $DIR/dockerd.log)"
        wait_ready "$pid"
    fi
    ensure_image
    echo "DOCKER_HOST=unix://$DIR/docker.sock"
}

stop() {
    local pid deadline
    pid="$(daemon_pid)"
    if [ -n "$pid" ]; then
        log "stopping dockerd $pid"
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + STOP_TIMEOUT_S))
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                log "dockerd $pid still running after ${STOP_TIMEOUT_S}s; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.2
        done
    else
        log "no dockerd running for $DIR"
    fi
    rm -f "$DIR/docker.pid"
    if [ -d "$DIR" ]; then
        kill_leftovers    # only finds something if dockerd had to be killed
        unmount_leftovers
    fi
    return 0
}

[ $# -eq 2 ] || usage
DIR="$2"
[ "${DIR#/}" != "$DIR" ] || DIR="$PWD/$DIR"
DIR="${DIR%/}"
[ ${#DIR} -le $MAX_DIR_LEN ] || die "DIR '$DIR' is longer than $MAX_DIR_LEN characters; use a short path such as /tmp/dai-docker"
readonly DIR

case "$1" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
