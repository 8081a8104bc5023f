#!/bin/sh
# Rebuild the WASI test workloads (*.wasm) from their C sources in this directory.
#
# The .wasm files are committed: tests and CI use them and need no C toolchain. Run this only
# after changing a .c file, then commit the .wasm files it writes.
#
# Needs (Debian 12): apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32
# wasi-libc installs its sysroot under /usr (headers in /usr/include/wasm32-wasi, libs in
# /usr/lib/wasm32-wasi); override with WASI_SYSROOT=... and CC=... if yours differ.
#
# Usage: sandbox/workloads/build.sh [name ...]     (default: every *.c here)
set -eu
cd "$(dirname "$0")"
CC=${CC:-clang}
SYSROOT=${WASI_SYSROOT:-/usr}
if [ "$#" -eq 0 ]; then
    set -- *.c
fi
for src in "$@"; do
    name=${src%.c}
    # -O2: small and fast; -s: strip names and debug info (a few KB per module).
    "$CC" --target=wasm32-wasi --sysroot="$SYSROOT" -O2 -s -o "$name.wasm" "$name.c"
    chmod 644 "$name.wasm"
    echo "$name.wasm: $(wc -c <"$name.wasm") bytes"
done
