"""The job's /out on every argv backend (process, Docker, bubblewrap): what the job leaves is described
in RunResult.out_entries (raw names, kinds, sizes, hashes within out_max_bytes; no link followed),
hashed files are kept in out_dir, and the output quota holds WHILE the job runs: /out is a tmpfs of
its own (root), so writing past out_max_bytes or out_max_files fails in the job with ENOSPC. After
every run, cancelled ones too, nothing is left mounted or staged beside out_dir.
"""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from distributeai.sandbox import OutEntry, SandboxError
from distributeai.sandbox.outdir import tmpfs_size

from .sandbox_helpers import (  # noqa: F401 - fixtures are used by name
    MB, OUT, PROMPT_S, job, sandbox, sha256, out_dir, timed_run, start_and_wait_running, stage_mounts, stages,
)

ROOT = os.geteuid() == 0  # only root can mount the tmpfs that enforces the quota while a job runs
needs_root = pytest.mark.skipif(not ROOT, reason="the quota is enforced while jobs run only as root")


@pytest.fixture(autouse=True)
def nothing_left(tmp_path):
    yield
    assert stage_mounts(tmp_path) == [], "a stage is still mounted"
    assert stages(tmp_path) == [], "a stage directory is left"


def file(name: bytes, data: bytes, kept: bool = True) -> OutEntry:
    return OutEntry(name=name, kind="file", size=len(data), digest=hashlib.sha256(data).digest(), kept=kept)


def run(sb, script: str, out_dir, **kw):
    return sb.run(job("sh", "-c", f"cd {OUT} && {script}", out_dir=str(out_dir), **kw))


# ---- description and keeping ------------------------------------------------------------------


def test_files_are_described_and_kept(sandbox, out_dir):
    script = (
        "mkdir -p a/b empty && printf hello > a/b/deep.txt && printf x > top"
        " && head -c 100000 /dev/zero > a/zeros && : > a/nothing"
    )
    result = run(sandbox, script, out_dir)
    assert (result.exit_code, result.stderr, result.out_enforced) == (0, b"", ROOT)
    assert result.out_entries == (
        OutEntry(b"a", "dir", 0),
        OutEntry(b"a/b", "dir", 0),
        file(b"a/b/deep.txt", b"hello"),
        file(b"a/nothing", b""),
        file(b"a/zeros", b"\0" * 100000),
        OutEntry(b"empty", "dir", 0),
        file(b"top", b"x"),
    )
    assert (out_dir / "a" / "b" / "deep.txt").read_bytes() == b"hello"
    assert (out_dir / "a" / "zeros").read_bytes() == b"\0" * 100000
    assert sorted(os.listdir(out_dir)) == ["a", "top"]  # directories only as a kept file's parents


def test_files_past_out_max_bytes_are_described_but_not_hashed(sandbox, out_dir):
    script = "head -c 600 /dev/zero > a && head -c 600 /dev/zero > b && head -c 10 /dev/zero > c"
    result = run(sandbox, script, out_dir, out_max_bytes=1000)
    assert result.exit_code == 0  # the tmpfs has room for a page per file: within it, never ENOSPC
    assert result.out_entries == (
        file(b"a", b"\0" * 600),
        OutEntry(b"b", "file", 600),  # the running total passed 1000: b and everything after it
        OutEntry(b"c", "file", 10),
    )
    assert os.listdir(out_dir) == ["a"]


def test_files_of_exactly_out_max_bytes_are_all_hashed(sandbox, out_dir):
    result = run(sandbox, "head -c 500 /dev/zero > a && head -c 500 /dev/zero > b", out_dir, out_max_bytes=1000)
    assert result.out_entries == (file(b"a", b"\0" * 500), file(b"b", b"\0" * 500))


def test_relative_out_dir(sandbox, out_dir, monkeypatch):
    monkeypatch.chdir(out_dir.parent)
    result = sandbox.run(job("sh", "-c", f"printf 1 > {OUT}/f", out_dir="out"))
    assert result.out_entries == (file(b"f", b"1"),)
    assert (out_dir / "f").read_bytes() == b"1"


def test_no_out_dir_no_entries(sandbox):
    result = sandbox.run(job("true"))
    assert (result.out_entries, result.out_enforced) == ((), False)


def test_missing_out_dir_is_rejected(sandbox, tmp_path):
    with pytest.raises(SandboxError) as err:
        sandbox.run(job("true", out_dir=str(tmp_path / "missing")))
    assert err.value.reason == "invalid_request"
    assert os.listdir(tmp_path) == []


def test_hostile_entries_are_described_with_raw_names_and_no_link_is_followed(sandbox, out_dir):
    long_dir, long_file = b"d" * 200, b"f" * 99  # a 300-byte path
    script = (
        "printf x > \"$(printf 'bad\\377name')\" && printf y > \"$(printf 'esc\\033[31mred')\""
        f" && mkdir {long_dir.decode()} && printf z > {long_dir.decode()}/{long_file.decode()}"
        " && mkfifo fifo && ln -s /etc/passwd passwd && ln -s /etc etc && ln -s ../../.. up"
        " && printf data > data && ln data hardlink"
    )
    result = run(sandbox, script, out_dir)
    assert (result.exit_code, result.stderr) == (0, b"")
    expected = [
        file(b"bad\xffname", b"x"),
        file(b"esc\x1b[31mred", b"y"),
        OutEntry(long_dir, "dir", 0),
        file(long_dir + b"/" + long_file, b"z"),
        OutEntry(b"fifo", "fifo", 0),
        OutEntry(b"passwd", "symlink", 0),
        OutEntry(b"etc", "symlink", 0),
        OutEntry(b"up", "symlink", 0),
        file(b"data", b"data"),
        file(b"hardlink", b"data"),
    ]
    assert result.out_entries == tuple(sorted(expected, key=lambda e: e.name))
    top = os.fsencode(out_dir)
    kept = sorted(os.path.relpath(os.path.join(d, n), top) for d, _, names in os.walk(top) for n in names)
    assert kept == sorted(e.name for e in expected if e.kept)  # the raw names, and no link, no FIFO
    assert (out_dir / os.fsdecode(b"bad\xffname")).read_bytes() == b"x"


def test_no_room_to_keep_means_described_but_not_kept(sandbox, out_dir):
    result = run(sandbox, "printf hello > a && mkdir d && printf x > d/b", out_dir, out_keep_free=1 << 62)
    assert result.out_entries == (
        file(b"a", b"hello", kept=False), OutEntry(b"d", "dir", 0), file(b"d/b", b"x", kept=False),
    )
    assert os.listdir(out_dir) == []


# ---- the quota, enforced while the job runs ------------------------------------------------------


@needs_root
def test_writing_past_out_max_bytes_fails_in_the_job(sandbox, out_dir):
    script = "head -c 5000000 /dev/zero > big; echo rc=$?"
    result, elapsed = timed_run(sandbox, job("sh", "-c", f"cd {OUT} && {script}", out_dir=str(out_dir),
                                             out_max_bytes=MB, out_max_files=10))
    assert result.out_enforced
    assert result.stdout == b"rc=1\n"  # head met ENOSPC, while it ran
    (big,) = result.out_entries
    assert (big.name, big.kind, big.digest, big.kept) == (b"big", "file", None, False)
    assert MB < big.size <= tmpfs_size(MB, 10) < 5_000_000
    assert os.listdir(out_dir) == []
    assert elapsed < PROMPT_S


@needs_root
def test_creating_past_out_max_files_fails_in_the_job(sandbox, out_dir):
    script = 'i=0; while [ $i -lt 1000 ]; do true > f$i || break; i=$((i+1)); done; echo "made $i"'
    result = run(sandbox, script, out_dir, out_max_files=50)
    assert result.stdout == b"made 51\n"  # one entry past the quota: enough for the rule to see it
    assert len(result.out_entries) == 51
    assert {e.kind for e in result.out_entries} == {"file"}


@needs_root
def test_sparse_files_are_described_with_their_size_and_not_read(sandbox, out_dir):
    if sandbox.name == "process":
        pytest.skip("the process backend caps each file at 64 MB (RLIMIT_FSIZE)")
    result, elapsed = timed_run(sandbox, job("sh", "-c", f"cd {OUT} && truncate -s 2G s1 && truncate -s 2G s2",
                                             out_dir=str(out_dir), out_max_bytes=MB))
    assert result.exit_code == 0  # sparse: no page of the tmpfs is used
    assert result.out_entries == (OutEntry(b"s1", "file", 2 << 30), OutEntry(b"s2", "file", 2 << 30))
    assert os.listdir(out_dir) == []
    assert elapsed < PROMPT_S


@needs_root
def test_cancel_mid_write_leaves_nothing_mounted(sandbox, out_dir):
    script = f"head -c 100000 /dev/zero > {OUT}/partial; exec sleep 60"
    thread, box, req = start_and_wait_running(sandbox, out_dir, script, out_max_bytes=MB)
    assert len(stage_mounts(out_dir.parent)) == 1  # mounted before the job started
    sandbox.cancel(req.run_id)
    thread.join(PROMPT_S)
    assert not thread.is_alive()
    assert box["error"].reason == "cancelled"
    assert os.listdir(out_dir) == []  # a cancelled run keeps nothing


def test_concurrent_runs_each_have_their_own_out(sandbox, tmp_path):
    dirs = [tmp_path / f"out{i}" for i in range(3)]
    results: list = [None] * 3

    def one(i: int) -> None:
        dirs[i].mkdir()
        results[i] = run(sandbox, f"printf {i} > f && ls", dirs[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, result in enumerate(results):
        assert (result.stdout, result.out_entries) == (b"f\n", (file(b"f", str(i).encode()),))
        assert (dirs[i] / "f").read_bytes() == str(i).encode()
