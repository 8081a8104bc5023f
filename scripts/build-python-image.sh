#!/usr/bin/env bash
# Build a local Python image for the Python workload, on machines without a registry (docs/sandbox.md):
# the host's Debian python3.11 with its standard library, the libraries ldd lists for it,
# busybox for a shell, and a mode-1777 /tmp, imported as one layer.
#
#   DOCKER_HOST=unix:///tmp/dai-docker/docker.sock scripts/build-python-image.sh [TAG ...]
#   DOCKER_HOST=unix:///tmp/dai-docker/docker.sock scripts/build-python-image.sh --numpy [TAG ...]
#
# Tags default to python:3.11-slim and python:3.9-slim (the name the seed's job files use).
# --numpy adds Debian's python3-numpy and OpenBLAS (its single-threaded build, libopenblas0-serial,
# as the image's libblas.so.3 and liblapack.so.3), installing both on the host with apt-get if
# missing; its tag defaults to distributeai/python-numpy:1 (examples/ai/README.md). A name of its
# own, because the registry's python:3.11-slim has no numpy and a job written for it must not
# come to depend on one here.
# Idempotent: does nothing when the first tag exists already.
set -euo pipefail
NUMPY=0
if [ "${1:-}" = "--numpy" ]; then NUMPY=1; shift; fi
TAGS=("$@")
if [ ${#TAGS[@]} -eq 0 ]; then
    if [ $NUMPY = 1 ]; then TAGS=(distributeai/python-numpy:1); else TAGS=(python:3.11-slim python:3.9-slim); fi
fi
log() { printf 'build-python-image.sh: %s\n' "$*" >&2; }
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2; }

if docker image inspect "${TAGS[0]}" >/dev/null 2>&1; then
    for t in "${TAGS[@]:1}"; do docker tag "${TAGS[0]}" "$t"; done
    exit 0
fi
PY=/usr/bin/python3.11
if [ ! -x "$PY" ]; then
    log "installing python3.11 (Debian) for the image"
    apt_install python3.11
fi
[ -x /bin/busybox ] || apt_install busybox-static
LIBS=("$PY" /usr/lib/python3.11/lib-dynload/*.so)
if [ $NUMPY = 1 ]; then
    ARCH="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("MULTIARCH"))')"
    NUMPY_DIR=/usr/lib/python3/dist-packages/numpy
    BLAS_DIR="/usr/lib/$ARCH/openblas-serial"
    if [ ! -f "$NUMPY_DIR/__init__.py" ] || [ ! -f "$BLAS_DIR/libopenblas.so.0" ]; then
        log "installing python3-numpy and libopenblas0-serial (Debian) for the image"
        apt_install python3-numpy libopenblas0-serial
    fi
    mapfile -t NUMPY_SO < <(find "$NUMPY_DIR" -name '*.so')
    LIBS+=("${NUMPY_SO[@]}" "$BLAS_DIR/libblas.so.3" "$BLAS_DIR/liblapack.so.3" "$BLAS_DIR/libopenblas.so.0")
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/usr/bin" "$ROOT/bin" "$ROOT/tmp" "$ROOT/out" "$ROOT/usr/lib"
chmod 1777 "$ROOT/tmp"
cp -a "$PY" "$ROOT/usr/bin/python3.11"
ln -s python3.11 "$ROOT/usr/bin/python3"
ln -s python3.11 "$ROOT/usr/bin/python"
# The standard library without tests, caches or the pip/ensurepip wheels, and without
# dist-packages (python3-numpy puts a copy of one of its modules there).
tar -C / --exclude='__pycache__' --exclude='python3.11/test' --exclude='python3.11/ensurepip' \
    --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' --exclude='python3.11/dist-packages' \
    -cf - usr/lib/python3.11 | tar -C "$ROOT" -xf -
# Shared libraries of the interpreter and of its extension modules (and numpy's, and OpenBLAS's).
# The BLAS and LAPACK ldd names are the host's current alternatives: they are put in below instead.
for f in "${LIBS[@]}"; do
    ldd "$f" 2>/dev/null | awk '/=>/ { print $3 } /ld-linux/ { print $1 }'
done | sort -u | grep -v -E '/(libblas\.so\.3|liblapack\.so\.3|libopenblas\.so\.0)$' | while read -r lib; do
    [ -f "$lib" ] || continue
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
if [ $NUMPY = 1 ]; then
    # numpy without its tests; OpenBLAS's serial build as the BLAS and LAPACK numpy links
    # (libblas.so.3 finds libopenblas.so.0 beside it: RUNPATH $ORIGIN).
    tar -C / --exclude='__pycache__' --exclude='tests' -cf - "${NUMPY_DIR#/}" | tar -C "$ROOT" -xf -
    mkdir -p "$ROOT/lib/$ARCH"
    for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do cp -L "$BLAS_DIR/$lib" "$ROOT/lib/$ARCH/$lib"; done
fi
# Debian's /lib and /lib64 are symlinks into /usr; keep the same layout.
for d in lib lib64; do
    if [ -L "/$d" ]; then ln -sfn "$(readlink "/$d")" "$ROOT/$d"; fi
done
cp /bin/busybox "$ROOT/bin/busybox"
for cmd in sh cat echo ls sha256sum head tr sleep; do ln -s busybox "$ROOT/bin/$cmd"; done
log "importing ${TAGS[0]} ($(du -sh "$ROOT" | cut -f1))"
tar -C "$ROOT" -cf - . | docker import -c 'ENV PATH=/usr/bin:/bin' - "${TAGS[0]}" >/dev/null
if [ $NUMPY = 1 ]; then
    # A check before the tag is trusted (this script does nothing once it exists): numpy imports
    # and multiplies through its BLAS in the image as a job runs (no network, uid 65534).
    check='import numpy as np; a = np.ones((64, 64), np.float32); assert (a @ a == 64).all(); print(np.__version__)'
    if ! docker run --rm --network none --user 65534:65534 "${TAGS[0]}" python3 -c "$check" >/dev/null; then
        docker image rm "${TAGS[0]}" >/dev/null 2>&1 || true
        log "numpy does not work in ${TAGS[0]}; image removed"
        exit 1
    fi
fi
for t in "${TAGS[@]:1}"; do docker tag "${TAGS[0]}" "$t"; done
log "built ${TAGS[*]}"
