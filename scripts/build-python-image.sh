#!/usr/bin/env bash
# Build a local Python image for the Python workload, on machines without a registry (docs/sandbox.md):
# the host's Debian python3.11 with its standard library, the libraries ldd lists for it,
# busybox for a shell, and a mode-1777 /tmp, imported as one layer.
#
#   DOCKER_HOST=unix:///tmp/dai-docker/docker.sock scripts/build-python-image.sh [TAG ...]
#
# Tags default to python:3.11-slim and python:3.9-slim (the name the seed's job files use).
# Idempotent: does nothing when the first tag exists already.
set -euo pipefail
TAGS=("$@")
[ ${#TAGS[@]} -gt 0 ] || TAGS=(python:3.11-slim python:3.9-slim)
log() { printf 'build-python-image.sh: %s\n' "$*" >&2; }

if docker image inspect "${TAGS[0]}" >/dev/null 2>&1; then
    for t in "${TAGS[@]:1}"; do docker tag "${TAGS[0]}" "$t"; done
    exit 0
fi
PY=/usr/bin/python3.11
if [ ! -x "$PY" ]; then
    log "installing python3.11 (Debian) for the image"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3.11 >&2
fi
[ -x /bin/busybox ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends busybox-static >&2

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/usr/bin" "$ROOT/bin" "$ROOT/tmp" "$ROOT/out" "$ROOT/usr/lib"
chmod 1777 "$ROOT/tmp"
cp -a "$PY" "$ROOT/usr/bin/python3.11"
ln -s python3.11 "$ROOT/usr/bin/python3"
ln -s python3.11 "$ROOT/usr/bin/python"
# The standard library without tests, caches or the pip/ensurepip wheels.
tar -C / --exclude='__pycache__' --exclude='python3.11/test' --exclude='python3.11/ensurepip' \
    --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' -cf - usr/lib/python3.11 | tar -C "$ROOT" -xf -
# Shared libraries of the interpreter and of its extension modules.
for f in "$PY" /usr/lib/python3.11/lib-dynload/*.so; do
    ldd "$f" 2>/dev/null | awk '/=>/ { print $3 } /ld-linux/ { print $1 }'
done | sort -u | while read -r lib; do
    [ -f "$lib" ] || continue
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
# Debian's /lib and /lib64 are symlinks into /usr; keep the same layout.
for d in lib lib64; do
    if [ -L "/$d" ]; then ln -sfn "$(readlink "/$d")" "$ROOT/$d"; fi
done
cp /bin/busybox "$ROOT/bin/busybox"
for cmd in sh cat echo ls sha256sum head tr sleep; do ln -s busybox "$ROOT/bin/$cmd"; done
log "importing ${TAGS[0]} ($(du -sh "$ROOT" | cut -f1))"
tar -C "$ROOT" -cf - . | docker import -c 'ENV PATH=/usr/bin:/bin' - "${TAGS[0]}" >/dev/null
for t in "${TAGS[@]:1}"; do docker tag "${TAGS[0]}" "$t"; done
log "built ${TAGS[*]}"
