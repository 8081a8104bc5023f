"""The job's /in (RunRequest.in_dir) on every backend, and /out's special entries.

/in: a host directory shown read-only (Docker and bubblewrap: a read-only bind at /in; wasm: a
read-only preopen at /in; the process backend: $IN_DIR, isolating nothing). A job reads and
lists it; on every backend that isolates, writing there fails in the job and the host directory
is the same afterwards, and a link inside it never reaches the host's files.

/out (issue 16, "Bad input"): symlinks to host paths, FIFOs, device nodes and hard links a job
leaves in /out are never followed into the host. They are described as what they are; only
regular files are kept, so out_dir holds no link and no FIFO afterwards.
"""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from distributeai.sandbox import OutEntry, RunRequest

from .sandbox_helpers import (  # noqa: F401 - fixtures are used by name
    IMAGE, big_stdin, job, out_dir, sandbox, sha256,
)

SECRET = b"host secret: never inside a job\n"
IN = '"${IN_DIR:-/in}"'  # where a job finds its inputs on every backend
DATA = big_stdin(300_000)
ISOLATING = ("docker", "bwrap")


@pytest.fixture
def secret(tmp_path):
    """A host file outside every sandbox, which links in /in and /out point at."""
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def in_dir(tmp_path, secret):
    """data.bin, sub/b.txt, and two links out of it: to the secret by absolute and by relative path."""
    path = tmp_path / "in"
    (path / "sub").mkdir(parents=True)
    (path / "data.bin").write_bytes(DATA)
    (path / "sub" / "b.txt").write_bytes(b"bee\n")
    (path / "abs").symlink_to(secret)
    (path / "rel").symlink_to("../secret.txt")
    return path


def snapshot(root) -> dict:
    """Every entry below root as (type and mode, size, mtime, content or link target), links not followed."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    body = f.read()
            else:
                body = None
            seen[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, body)
    return seen


# ---- /in: reading ---------------------------------------------------------------------------------


def test_a_job_reads_and_lists_in(sandbox, in_dir):
    before = snapshot(in_dir)
    script = f'cd {IN} && sha256sum data.bin && cat sub/b.txt && find . | sort'
    result = sandbox.run(job("sh", "-c", script, in_dir=str(in_dir)))
    assert (result.exit_code, result.stderr) == (0, b"")
    assert result.stdout == (
        f"{sha256(DATA)}  data.bin\n".encode() + b"bee\n" + b".\n./abs\n./data.bin\n./rel\n./sub\n./sub/b.txt\n"
    )
    assert snapshot(in_dir) == before


# ---- /in: read-only, and no way out through its links ----------------------------------------------


def open_to_all(root) -> None:
    """Modes that let any uid write: only the read-only mount can stop the job."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666)


WRITES = [
    "touch /in/new", "echo x >> /in/data.bin", "rm /in/sub/b.txt", "mkdir /in/d", "mv /in/sub /in/moved",
    "chmod 700 /in/data.bin", "ln -s x /in/newlink", "truncate -s 0 /in/data.bin",
]


def test_writing_into_in_fails_and_its_links_reach_no_host_file(sandbox, in_dir):
    if sandbox.name not in ISOLATING:
        pytest.skip("the process backend isolates nothing: its jobs can write to $IN_DIR")
    open_to_all(in_dir)
    before = snapshot(in_dir)
    script = "; ".join(f'{cmd}; echo "$?"' for cmd in WRITES) + "; cat /in/abs /in/rel; echo $?"
    result = sandbox.run(job("sh", "-c", script, in_dir=str(in_dir)))
    assert result.exit_code == 0
    codes = result.stdout.split()
    assert len(codes) == len(WRITES) + 1 and b"0" not in codes, (codes, result.stderr)
    assert SECRET not in result.stdout
    # Every write was refused by the mount (the modes would have let it through).
    assert result.stderr.count(b"Read-only file system") == len(WRITES), result.stderr
    assert snapshot(in_dir) == before


# ---- /in on wasm: a read-only preopen ------------------------------------------------------------

# Reads /in/data.bin (fd 3, the one preopen; links followed) to stdout, then tries to create /in/new.txt for writing
# and exits with that call's WASI errno (0: created); if data.bin cannot be opened, it exits with
# that errno and writes nothing. WAT, so no C toolchain is needed.
IN_WAT = """
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "data.bin")
  (data (i32.const 16) "new.txt")
  (func (export "_start")
    (local $err i32) (local $n i32)
    (local.set $err (call $path_open (i32.const 3) (i32.const 1) (i32.const 0) (i32.const 8)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 44)))
    (if (local.get $err) (then (call $proc_exit (local.get $err))))
    (block $done (loop $copy
      (i32.store (i32.const 32) (i32.const 1024))
      (i32.store (i32.const 36) (i32.const 4096))
      (drop (call $fd_read (i32.load (i32.const 44)) (i32.const 32) (i32.const 1) (i32.const 40)))
      (local.set $n (i32.load (i32.const 40)))
      (br_if $done (i32.eqz (local.get $n)))
      (i32.store (i32.const 36) (local.get $n))
      (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))
      (br $copy)))
    (call $proc_exit (call $path_open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 7)
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 44)))))
"""
WASI_EBADF, WASI_EPERM = 8, 63


def test_wasm_reads_in_and_cannot_write_there(in_dir):
    wasmtime = pytest.importorskip("wasmtime")
    from distributeai.sandbox import open_sandbox

    before = snapshot(in_dir)
    sb = open_sandbox("wasm", log=lambda _m: None)
    try:
        req = RunRequest(image="", command=["in"], wasm_module=wasmtime.wat2wasm(IN_WAT), in_dir=str(in_dir))
        result = sb.run(req)
        # The same module without /in: path_open on fd 3 fails (EBADF, 8), nothing is read.
        alone = sb.run(RunRequest(image="", command=["in"], wasm_module=req.wasm_module))
    finally:
        sb.close()
    assert (result.exit_code, result.stdout, result.stderr) == (WASI_EPERM, DATA, b"")
    assert (alone.exit_code, alone.stdout) == (WASI_EBADF, b"")
    assert snapshot(in_dir) == before


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_wasm_cannot_follow_a_link_out_of_in(tmp_path, secret, target):
    wasmtime = pytest.importorskip("wasmtime")
    from distributeai.sandbox import open_sandbox

    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "data.bin").symlink_to(secret if target == "absolute" else "../secret.txt")
    sb = open_sandbox("wasm", log=lambda _m: None)
    try:
        req = RunRequest(image="", command=["in"], wasm_module=wasmtime.wat2wasm(IN_WAT), in_dir=str(linked))
        result = sb.run(req)
    finally:
        sb.close()
    assert (result.exit_code, result.stdout, result.stderr) == (WASI_EPERM, b"", b"")


# ---- RunRequest checks in_dir -----------------------------------------------------------------------


def test_in_dir_must_be_an_absolute_path_of_a_directory(tmp_path, in_dir):
    (tmp_path / "file").write_bytes(b"x")
    for bad in ["in", str(tmp_path / "missing"), str(tmp_path / "file"), "/tmp/\0x", "", b"/tmp", 7]:
        with pytest.raises(ValueError):
            RunRequest(image=IMAGE, command=["true"], in_dir=bad)
    assert RunRequest(image=IMAGE, command=["true"], in_dir=str(in_dir)).in_dir == str(in_dir)


# ---- /out: special entries are never followed into the host ----------------------------------------


def test_special_entries_in_out_are_described_not_followed(sandbox, out_dir, in_dir, secret):
    if sandbox.name not in ISOLATING:
        pytest.skip("Docker and bubblewrap (the process backend's jobs are the node's user)")
    script = "; ".join([
        "cd /out",
        f"ln -s /etc/passwd passwd && ln -s {secret} host && ln -s ../secret.txt up",
        "mkfifo fifo",
        'mknod null c 1 3 2>/dev/null; echo "mknod $?"',
        "printf data > data && ln data hard",  # two names for one file inside /out
        'ln /in/data.bin from-in 2>/dev/null; echo "link from /in $?"',  # across mounts: impossible
        'printf t > /tmp/t && ln /tmp/t from-tmp 2>/dev/null; echo "link from /tmp $?"',
        f'ln {secret} from-host 2>/dev/null; echo "link from the host $?"',  # not even visible
    ])
    result = sandbox.run(job("sh", "-c", script, in_dir=str(in_dir), out_dir=str(out_dir)))
    assert (result.exit_code, result.stderr) == (0, b"")
    # The job has no capabilities (no mknod), and link(2) never crosses a mount.
    assert result.stdout == b"mknod 1\nlink from /in 1\nlink from /tmp 1\nlink from the host 1\n"
    data = OutEntry(b"data", "file", 4, hashlib.sha256(b"data").digest(), kept=True)
    assert result.out_entries == (
        data, OutEntry(b"fifo", "fifo", 0), OutEntry(b"hard", "file", 4, hashlib.sha256(b"data").digest(), kept=True),
        OutEntry(b"host", "symlink", 0), OutEntry(b"passwd", "symlink", 0), OutEntry(b"up", "symlink", 0),
    )
    kept = snapshot(out_dir)  # only the regular files, each its own copy: no link, no FIFO to block a reader
    assert sorted(kept) == ["data", "hard"]
    assert all(stat.S_ISREG(mode) and body == b"data" for mode, _, _, body in kept.values())
    assert os.stat(out_dir / "data").st_ino != os.stat(out_dir / "hard").st_ino
    assert secret.read_bytes() == SECRET
