"""The sandbox conformance suite: one set of tests run against every argv backend (process, Docker,
bubblewrap): results, limits, stdin, pull and cancel (output files: tests/test_sandbox_out.py). What
only one backend promises:
tests/test_sandbox_backends.py; pure logic: tests/test_sandbox_units.py; the wasm backend runs
modules, not argv: tests/test_sandbox_wasm.py. Nothing here fakes a backend.
"""

from __future__ import annotations

import os
import time

import pytest
import trio

from distributeai.sandbox import RunRequest, RunResult, SandboxError

from .sandbox_helpers import (  # noqa: F401 - fixtures are used by name
    IMAGE, HELLO, HELLO_STDOUT, PROMPT_S, MB, OUT, job, sandbox, sha256, big_stdin, out_dir, timed_run,
    run_id, start_and_wait_running, stage_mounts, stages,
)


# ---- conformance: every backend ---------------------------------------------------------------


def test_demo_hash_job(sandbox):
    result = sandbox.run(job(*HELLO))
    assert result.stdout == HELLO_STDOUT
    assert result.stderr == b""
    assert result.exit_code == 0
    assert not (result.timed_out or result.oom_killed)
    assert not (result.stdout_truncated or result.stderr_truncated)
    assert result.sandbox == sandbox.name
    assert 0 < result.duration_s < PROMPT_S


def test_nonzero_exit_and_separate_streams(sandbox):
    result = sandbox.run(job("sh", "-c", "echo out; echo err >&2; exit 3"))
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert not result.timed_out


def test_env_is_passed(sandbox):
    env = {"GREETING": "hi there", "EMPTY": ""}
    result = sandbox.run(job("sh", "-c", 'printf "%s|%s" "$GREETING" "$EMPTY"', env=env))
    assert result.stdout == b"hi there|"


def test_timeout_kills_job(sandbox):
    result, elapsed = timed_run(sandbox, job("sleep", "30", timeout_s=1))
    assert result.timed_out
    assert result.exit_code == 137  # SIGKILL
    assert not result.oom_killed
    assert 0.9 <= result.duration_s < PROMPT_S
    assert elapsed < PROMPT_S


def test_timeout_kills_background_children(sandbox):
    # The children hold stdout open: the backend must kill them, not wait for EOF.
    result, elapsed = timed_run(sandbox, job("sh", "-c", "sleep 30 & sleep 30 & wait", timeout_s=1))
    assert result.timed_out
    assert elapsed < PROMPT_S


def test_exit_of_main_process_ends_job(sandbox):
    # A detached grandchild keeps the pipes open; the job still ends with its main process.
    result, elapsed = timed_run(sandbox, job("sh", "-c", "(sleep 30 &); echo done", timeout_s=20))
    assert (result.exit_code, result.stdout, result.timed_out) == (0, b"done\n", False)
    assert elapsed < PROMPT_S


def test_stdout_over_cap_is_truncated_to_exactly_cap(sandbox):
    result = sandbox.run(job("head", "-c", "100000", "/dev/zero", output_cap=1000))
    assert result.stdout == b"\0" * 1000
    assert result.stdout_truncated
    assert not result.stderr_truncated
    assert result.exit_code == 0


def test_stderr_over_cap_is_truncated_independently(sandbox):
    result = sandbox.run(job("sh", "-c", "echo small; head -c 5000 /dev/zero >&2", output_cap=100))
    assert (result.stdout, result.stdout_truncated) == (b"small\n", False)
    assert (len(result.stderr), result.stderr_truncated) == (100, True)


def test_output_of_exactly_cap_is_not_truncated(sandbox):
    result = sandbox.run(job("head", "-c", "1000", "/dev/zero", output_cap=1000))
    assert (len(result.stdout), result.stdout_truncated) == (1000, False)


def test_large_output_keeps_the_head(sandbox):
    # 3 MB through the default 1 MiB cap: the first bytes are kept, in order.
    script = "i=0; while [ $i -lt 3000 ]; do printf '%01023d\\n' $i; i=$((i+1)); done"
    result = sandbox.run(job("sh", "-c", script))
    assert result.stdout_truncated
    assert len(result.stdout) == 1 << 20
    assert result.stdout.startswith(b"0" * 1023 + b"\n" + b"0" * 1022 + b"1\n")
    assert result.exit_code == 0


def test_zero_cap_keeps_nothing(sandbox):
    result = sandbox.run(job("echo", "x", output_cap=0))
    assert (result.stdout, result.stdout_truncated) == (b"", True)


def test_missing_executable_is_a_job_failure(sandbox):
    result = sandbox.run(job("no-such-program-dai"))
    assert result.exit_code == 127
    assert result.stderr == b"sandbox: cannot execute no-such-program-dai: not found\n"


async def test_runs_concurrently_from_trio_threads(sandbox):
    results: list[RunResult] = []

    async def one(i: int) -> None:
        req = job("sh", "-c", f"echo {i}")
        results.append(await trio.to_thread.run_sync(sandbox.run, req))

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(one, i)
    assert sorted(r.stdout for r in results) == [b"0\n", b"1\n", b"2\n", b"3\n"]


# ---- conformance: stdin -----------------------------------------------------------------------


def test_stdin_round_trip(sandbox):
    result = sandbox.run(job("sh", "-c", "cat | sha256sum", stdin=b"Hello\n"))
    assert (result.exit_code, result.stdout, result.stderr) == (0, HELLO_STDOUT, b"")


def test_large_stdin_arrives_whole_and_in_order(sandbox):
    data = big_stdin()
    result = sandbox.run(job("sh", "-c", "cat | sha256sum", stdin=data, timeout_s=20))
    assert result.stdout == f"{sha256(data)}  -\n".encode()


def test_empty_stdin_is_eof_at_once(sandbox):
    # A job reading stdin must not wait for input that never comes (the timeout would show it).
    result, elapsed = timed_run(sandbox, job("sh", "-c", "cat; wc -c", timeout_s=10))
    assert (result.exit_code, result.stdout.split(), result.timed_out) == (0, [b"0"], False)
    assert elapsed < PROMPT_S


@pytest.mark.parametrize(
    "script", ["true", "sleep 0.3; echo done", "exec 0<&-; sleep 0.3; echo done"]
)
def test_job_that_ignores_large_stdin_returns(sandbox, script):
    # 1 MB is far more than a pipe holds: the writer blocks until the job exits.
    result, elapsed = timed_run(sandbox, job("sh", "-c", script, stdin=big_stdin(), timeout_s=20))
    assert (result.exit_code, result.timed_out) == (0, False)
    assert result.stdout == (b"" if script == "true" else b"done\n")
    assert elapsed < PROMPT_S


def test_job_that_reads_part_of_stdin(sandbox):
    result = sandbox.run(job("head", "-c", "5", stdin=b"abcdefgh" * MB, timeout_s=20))
    assert (result.exit_code, result.stdout) == (0, b"abcde")


def test_timeout_with_unread_stdin(sandbox):
    result, elapsed = timed_run(sandbox, job("sleep", "30", stdin=big_stdin(), timeout_s=1))
    assert result.timed_out and result.exit_code == 137
    assert elapsed < PROMPT_S


# ---- conformance: pull and cancel (out_dir and the output quota: tests/test_sandbox_out.py) ---


def test_pull_of_an_image_at_hand_returns(sandbox):
    sandbox.pull(IMAGE)  # present (docker) or ignored (bwrap, process): no registry is asked
    assert sandbox.has_image(IMAGE)


def test_cancel_stops_a_running_job_promptly(sandbox, out_dir):
    rid = run_id()
    thread, box, req = start_and_wait_running(sandbox, out_dir, run_id=rid)
    assert stages(out_dir.parent) != []  # its /out is staged beside out_dir while it runs
    # While it runs, its run_id is taken.
    with pytest.raises(SandboxError) as dup:
        sandbox.run(job("true", run_id=rid))
    assert dup.value.reason == "invalid_request"
    cancelled_at = time.monotonic()
    sandbox.cancel(rid)
    thread.join(PROMPT_S)
    assert not thread.is_alive(), "run() did not return after cancel"
    assert time.monotonic() - cancelled_at < PROMPT_S
    assert isinstance(box.get("error"), SandboxError), box
    assert box["error"].reason == "cancelled"
    assert (stage_mounts(out_dir.parent), stages(out_dir.parent), os.listdir(out_dir)) == ([], [], [])
    sandbox.cancel(rid)  # again, after the end: nothing happens
    assert sandbox.run(job("echo", "after", run_id=run_id())).stdout == b"after\n"


def test_cancel_before_the_run_means_it_never_starts(sandbox, out_dir):
    rid = run_id()
    sandbox.cancel(rid)  # overtakes the run: remembered for it
    with pytest.raises(SandboxError) as err:
        sandbox.run(job("sh", "-c", f"echo ran > {OUT}/ran", out_dir=str(out_dir), run_id=rid))
    assert err.value.reason == "cancelled"
    assert (stage_mounts(out_dir.parent), stages(out_dir.parent), os.listdir(out_dir)) == ([], [], [])


def test_cancel_of_an_ended_or_unknown_run_changes_nothing(sandbox):
    rid = run_id()
    result = sandbox.run(job("echo", "x", run_id=rid))
    sandbox.cancel(rid)
    sandbox.cancel(rid)
    assert (result.exit_code, result.stdout) == (0, b"x\n")
    assert sandbox.run(job("echo", "y", run_id=run_id())).stdout == b"y\n"
    assert sandbox.run(job("echo", "z")).stdout == b"z\n"  # no run_id: cannot be cancelled, runs


def test_cancel_of_one_run_leaves_the_others(sandbox, out_dir):
    thread, box, req = start_and_wait_running(sandbox, out_dir, run_id=run_id())
    sandbox.cancel(run_id())  # an unrelated id
    result = sandbox.run(job("echo", "alive", run_id=run_id()))
    assert result.stdout == b"alive\n"
    assert thread.is_alive()  # still sleeping: nothing cancelled it
    sandbox.cancel(req.run_id)
    thread.join(PROMPT_S)
    assert not thread.is_alive()
    assert box["error"].reason == "cancelled"
