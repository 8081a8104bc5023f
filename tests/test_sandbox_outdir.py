"""sandbox/outdir.py without a job: the walk over a stage, describing and keeping its files, the stage's
mount and removal (mounts need root; those tests skip otherwise). The backends' use of it, with real
jobs: tests/test_sandbox_out.py."""

from __future__ import annotations

import ctypes
import hashlib
import os
import socket
import subprocess

import pytest

from distributeai.sandbox import OutEntry, RunRequest, SandboxError
from distributeai.sandbox import outdir
from distributeai.sandbox.outdir import WALK_PATH_MAX, OutStage, describe, remove_stale_stages, tmpfs_size, walk

from .sandbox_helpers import stage_mounts, stages


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")


def names(root, limit: int) -> list[bytes]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [rel for rel, _ in walk(fd, limit)]
    finally:
        os.close(fd)


def collect(stage, out, max_bytes: int = 1 << 30, keep_free: int = 0, limit: int = 1000,
            hasher=hashlib.sha256) -> tuple[OutEntry, ...]:
    root = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
    dest = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return describe(root, walk(root, limit), max_bytes, dest, keep_free, hasher)
    finally:
        os.close(root)
        os.close(dest)


@pytest.fixture
def stage(tmp_path):
    path = tmp_path / "stage"
    path.mkdir()
    return path


@pytest.fixture
def out(tmp_path):
    path = tmp_path / "out"
    path.mkdir()
    return path


def test_tmpfs_size_is_the_quota_a_page_per_entry_and_a_mib():
    assert tmpfs_size(0, 0) == 1 << 20
    assert tmpfs_size(1000, 50) == 1000 + 50 * 4096 + (1 << 20) + 3096  # rounded up to a page


# ---- walk --------------------------------------------------------------------------------------


def test_walk_is_depth_first_in_byte_order_and_stops_at_the_limit(stage):
    for d in ("a", "a/x", "b"):
        (stage / d).mkdir()
    for f in ("a-b", "a.txt", "a/x/1", "a/y", "b/z", "c"):
        (stage / f).write_bytes(b"")
    every = [b"a", b"a/x", b"a/x/1", b"a/y", b"a-b", b"a.txt", b"b", b"b/z", b"c"]
    assert names(stage, 100) == every
    for limit in range(len(every) + 1):  # the first `limit` of the walk, whatever the limit
        assert names(stage, limit) == every[:limit]


def test_walk_follows_no_link_and_does_not_enter_too_deep_directories(stage):
    (stage / "etc").symlink_to("/etc")
    (stage / "up").symlink_to("..")
    deep = os.fsencode(stage)
    rel = b""
    while len(rel) <= WALK_PATH_MAX:
        rel = rel + b"/" + b"d" * 100 if rel else b"d" * 100
        os.mkdir(deep + b"/" + rel)
    os.mkdir(deep + b"/" + rel + b"/hidden")
    found = names(stage, 1000)
    assert found[-2:] == [b"etc", b"up"]
    assert found[-3] == rel  # described, not entered: its path is past WALK_PATH_MAX
    assert all(not n.endswith(b"hidden") for n in found)


def test_walk_keeps_raw_names(stage):
    for name in (b"bad\xffname", b"esc\x1b[31mred", b"new\nline", "é".encode()):
        open(os.path.join(os.fsencode(stage), name), "wb").close()
    assert names(stage, 10) == sorted([b"bad\xffname", b"esc\x1b[31mred", b"new\nline", "é".encode()])


# ---- describe and keep -------------------------------------------------------------------------


def test_describe_kinds_budget_and_keep(stage, out, tmp_path):
    (stage / "a").write_bytes(b"x" * 600)
    (stage / "b").write_bytes(b"y" * 600)
    (stage / "c").write_bytes(b"")
    (stage / "d").mkdir()
    (stage / "d" / "f").write_bytes(b"in d")
    os.mkfifo(stage / "fifo")  # opening it would block: it is never opened
    (stage / "link").symlink_to("/etc/passwd")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(stage / "sock"))
    sock.close()
    assert collect(stage, out, max_bytes=1000) == (
        OutEntry(b"a", "file", 600, sha256(b"x" * 600), True),
        OutEntry(b"b", "file", 600),  # the running total passed 1000 here: not read, not kept
        OutEntry(b"c", "file", 0),  # nor anything after it, however small
        OutEntry(b"d", "dir", 0),
        OutEntry(b"d/f", "file", 4),
        OutEntry(b"fifo", "fifo", 0),
        OutEntry(b"link", "symlink", 0),
        OutEntry(b"sock", "socket", 0),
    )
    assert os.listdir(out) == ["a"]
    if ROOT:
        os.mknod(stage / "null", 0o600 | 0o020000, os.makedev(1, 3))
        assert OutEntry(b"null", "device", 0) in collect(stage, tmp_path / "out", keep_free=1 << 62)


def test_keep_never_follows_or_replaces_what_is_in_out_dir(stage, out, tmp_path):
    (stage / "d").mkdir()
    (stage / "d" / "f").write_bytes(b"new")
    (stage / "g").write_bytes(b"new")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "d").symlink_to(elsewhere)  # a link where a directory is to be made
    (out / "g").write_bytes(b"old")
    assert collect(stage, out) == (
        OutEntry(b"d", "dir", 0),
        OutEntry(b"d/f", "file", 3, sha256(b"new"), False),
        OutEntry(b"g", "file", 3, sha256(b"new"), False),
    )
    assert os.listdir(elsewhere) == [] and (out / "g").read_bytes() == b"old"


class Counting:
    """A hasher that records what it was fed: each file's bytes once, in order."""

    fed: list[bytes] = []

    def __init__(self) -> None:
        self.data = bytearray()

    def update(self, chunk: bytes) -> None:
        self.data += chunk

    def digest(self) -> bytes:
        Counting.fed.append(bytes(self.data))
        return b"len:%d" % len(self.data)


def test_an_injected_hasher_names_each_file_from_the_one_read_that_copies_it(stage, out):
    (stage / "a").write_bytes(b"x" * 3_000_000)
    (stage / "d").mkdir()
    (stage / "d" / "b").write_bytes(b"hello")
    Counting.fed = []
    entries = collect(stage, out, hasher=Counting)
    assert [(e.name, e.digest, e.kept) for e in entries] == [
        (b"a", b"len:3000000", True), (b"d", None, False), (b"d/b", b"len:5", True)]
    assert Counting.fed == [b"x" * 3_000_000, b"hello"]
    assert (out / "a").read_bytes() == b"x" * 3_000_000 and (out / "d" / "b").read_bytes() == b"hello"
    with pytest.raises(ValueError):
        RunRequest(image="i", command=["true"], out_hasher="sha256")


@needs_root
def test_a_copy_that_fails_is_removed(stage, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        (stage / "a").write_bytes(b"a" * 40_000)
        (stage / "b").write_bytes(b"b" * 40_000)
        # A negative reserve passes the free-space check: the second copy meets ENOSPC itself.
        entries = collect(stage, small, keep_free=-(1 << 40))
        assert [(e.name, e.digest is not None, e.kept) for e in entries] == [(b"a", True, True), (b"b", True, False)]
        assert os.listdir(small) == ["a"]
    finally:
        subprocess.run(["umount", str(small)], check=True)


# ---- OutStage ----------------------------------------------------------------------------------


@needs_root
def test_stage_is_a_tmpfs_beside_out_dir_and_is_removed(out, tmp_path):
    req = RunRequest(image="x", command=["true"], out_dir=str(out), out_max_bytes=10_000, out_max_files=3)
    with OutStage(req, owner=(65534, 65534), log=print) as stage:
        assert stage.enforced and os.path.dirname(stage.path) == str(tmp_path)
        assert stage_mounts(tmp_path) == [stage.path]
        st = os.stat(stage.path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o755)
        vfs = os.statvfs(stage.path)
        assert (vfs.f_blocks * vfs.f_frsize, vfs.f_files) == (tmpfs_size(10_000, 3), 5)
        with open(os.path.join(stage.path, "f"), "wb") as f:
            f.write(b"kept")
        assert stage.collect() == (OutEntry(b"f", "file", 4, sha256(b"kept"), True),)
    assert stage.enforced  # still says how the run's /out was
    assert (stage_mounts(tmp_path), stages(tmp_path)) == ([], [])
    assert (out / "f").read_bytes() == b"kept"


def test_stage_falls_back_to_a_directory_when_it_cannot_mount(out, tmp_path, monkeypatch):
    class NoMount:
        def mount(self, *args):
            ctypes.set_errno(1)  # EPERM, as for a node that is not root
            return -1

        def umount2(self, *args):
            raise AssertionError("nothing was mounted")

    monkeypatch.setattr(outdir, "_libc", NoMount())
    monkeypatch.setattr(outdir, "_warned", False)
    warnings: list[str] = []
    req = RunRequest(image="x", command=["true"], out_dir=str(out))
    for _ in range(2):
        with OutStage(req, owner=None, log=warnings.append) as stage:
            assert not stage.enforced and os.path.isdir(stage.path)
            with open(os.path.join(stage.path, "f"), "wb") as f:
                f.write(b"x")
            assert stage.collect() == (OutEntry(b"f", "file", 1, sha256(b"x"), True),)
        assert stages(tmp_path) == []
        (out / "f").unlink()
    assert len(warnings) == 1 and "checked only after each job" in warnings[0]


def test_a_quota_no_tmpfs_can_hold_is_refused(out, tmp_path):
    req = RunRequest(image="x", command=["true"], out_dir=str(out), out_max_files=1 << 64)
    with pytest.raises(SandboxError) as err:
        with OutStage(req, owner=None, log=print):
            raise AssertionError("the stage must not be made")
    assert err.value.reason == "invalid_request"
    assert (stage_mounts(tmp_path), stages(tmp_path)) == ([], [])


@needs_root
def test_stages_of_dead_processes_are_removed(out, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".stage-out-{dead.pid}-0123abcd"
    left.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(left)], check=True)
    (left / "junk").write_bytes(b"x")
    warnings: list[str] = []
    with OutStage(RunRequest(image="x", command=["true"], out_dir=str(out)), owner=None, log=warnings.append):
        assert not left.exists()
    assert (stage_mounts(tmp_path), stages(tmp_path)) == ([], [])
    assert len(warnings) == 1 and str(left) in warnings[0]


def test_a_node_frees_stages_of_dead_processes_at_start_and_leaves_live_ones(tmp_path):
    """What a starting node (node/daemon.py) and a stopping devnet call for an outputs directory."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".stage-job-{dead.pid}-0123abcd"
    mine = tmp_path / f".stage-job-{os.getpid()}-0123abcd"
    for d in (left, mine):
        d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(left)], check=True)
    try:
        assert remove_stale_stages(tmp_path, lambda _: None) == [str(left)]
        assert not left.exists() and mine.exists() and stage_mounts(tmp_path) == []
    finally:
        subprocess.run(["umount", "-l", str(left)], capture_output=True)
