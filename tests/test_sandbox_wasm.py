"""The wasm sandbox backend (wasmtime, WASI preview 1).

Uses the committed modules in sandbox/workloads/*.wasm (no C toolchain needed) and small modules
written inline in the WebAssembly text format (wasmtime.wat2wasm).
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import wasmtime

from distributeai.sandbox import RunRequest, RunResult, SandboxError, open_sandbox
from distributeai.sandbox.wasm_backend import DEFAULT_FUEL, WasmSandbox

from .sandbox_helpers import run_in_thread

WORKLOADS = Path(__file__).resolve().parent.parent / "sandbox" / "workloads"
HELLO_SHA256 = b"66a045b452102c59d840ec097d59d9467e13a3f34f6494e539ffd32c1bb35f18  -\n"


def module(name: str) -> bytes:
    return (WORKLOADS / f"{name}.wasm").read_bytes()


def wat(text: str) -> bytes:
    return wasmtime.wat2wasm(text)


def req(mod: bytes | str, command: list[str] | None = None, **kw) -> RunRequest:
    if isinstance(mod, str):
        command = command or [mod]
        mod = module(mod)
    return RunRequest(image="ignored", command=command or ["job"], wasm_module=mod, **kw)


@pytest.fixture(scope="module")
def sb():
    sandbox = open_sandbox("wasm", log=print)
    sandbox.check()
    yield sandbox
    sandbox.close()


# --- hashverify: correctness and determinism ----------------------------------------------------


def test_open_sandbox_gives_wasm_backend(sb):
    assert isinstance(sb, WasmSandbox)
    assert sb.name == "wasm"
    assert sb.has_image("anything:latest")


def test_hashverify_stdin_matches_sha256sum(sb):
    r = sb.run(req("hashverify", stdin=b"Hello\n"))
    assert r == RunResult(exit_code=0, stdout=HELLO_SHA256, stderr=b"", timed_out=False, oom_killed=False,
                          stdout_truncated=False, stderr_truncated=False, duration_s=r.duration_s,
                          sandbox="wasm", fuel_used=r.fuel_used)
    assert r.fuel_used > 0


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 1000, b"x" * 55, b"x" * 56, b"x" * 64])
def test_hashverify_agrees_with_hashlib(sb, data):
    r = sb.run(req("hashverify", stdin=data))
    assert r.stdout == hashlib.sha256(data).hexdigest().encode() + b"  -\n"


def test_hashverify_hashes_its_arguments(sb):
    r = sb.run(req("hashverify", ["hashverify", "hello", "world"]))
    assert r.stdout == hashlib.sha256(b"hello world").hexdigest().encode() + b"  -\n"


def test_output_and_fuel_identical_over_10_runs(sb):
    results = [sb.run(req("hashverify", stdin=b"Hello\n")) for _ in range(10)]
    assert {r.stdout for r in results} == {HELLO_SHA256}
    assert len({r.fuel_used for r in results}) == 1
    # a fresh backend (fresh compile) agrees too
    other = WasmSandbox()
    try:
        assert other.run(req("hashverify", stdin=b"Hello\n")).fuel_used == results[0].fuel_used
    finally:
        other.close()


def test_fuel_grows_with_work(sb):
    small = sb.run(req("hashverify", stdin=b"a" * 1000)).fuel_used
    big = sb.run(req("hashverify", stdin=b"a" * 100_000)).fuel_used
    assert big > 50 * small > 0


# --- argv, env, exit codes ----------------------------------------------------------------------


def test_argv_and_env_are_passed_exactly(sb):
    r = sb.run(req("probe", ["probe", "a b", "ünï"], env={"FOO": "bar", "EMPTY": ""}))
    assert r.exit_code == 0
    assert r.stdout == "argc=3\nargv[0]=probe\nargv[1]=a b\nargv[2]=ünï\nenv:FOO=bar\nenv:EMPTY=\n".encode()


def test_host_environment_is_not_inherited(sb):
    r = sb.run(req("probe"))
    assert b"env:" not in r.stdout


@pytest.mark.parametrize("code", [0, 1, 7, 125])
def test_exit_code_from_proc_exit(sb, code):
    r = sb.run(req("probe", ["probe", "--exit", str(code)]))
    assert r.exit_code == code
    assert not r.timed_out and not r.oom_killed


def test_exit_status_outside_wasi_range_is_an_error(sb):
    r = sb.run(req(wat("""(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32)))
                          (memory (export "memory") 1) (func (export "_start") i32.const 200 call $e))""")))
    assert r.exit_code == 134
    assert r.stderr.startswith(b"wasm: error: exit with invalid exit status")


def test_returning_from_start_is_exit_0(sb):
    r = sb.run(req(wat('(module (memory (export "memory") 1) (func (export "_start")))')))
    assert (r.exit_code, r.stdout, r.stderr, r.fuel_used) == (0, b"", b"", r.fuel_used)


# --- fuel and wall clock ------------------------------------------------------------------------


def test_fuel_exhaustion_is_a_result(sb):
    t0 = time.monotonic()
    results = [sb.run(req("spin", fuel=1_000_000, timeout_s=10)) for _ in range(3)]
    assert time.monotonic() - t0 < 10  # fuel, not one run's 10 s clock (room for loaded CI cores)
    for r in results:
        assert r.exit_code == 137
        assert r.timed_out and not r.oom_killed
        assert r.fuel_used == 1_000_000
        assert r.stderr == b"wasm: fuel exhausted (1000000 units)\n"


def test_default_fuel_is_used_when_unset(sb):
    r = sb.run(req("hashverify", stdin=b"Hello\n"))
    assert r.fuel_used < DEFAULT_FUEL
    tight = sb.run(req("hashverify", stdin=b"Hello\n", fuel=r.fuel_used))
    assert tight.exit_code == 0 and tight.stdout == HELLO_SHA256  # exactly enough
    assert tight.fuel_used == r.fuel_used
    # Fuel is checked at function entries and loop headers: a run can overdraw by the code
    # after the last check (then fuel_used reports the whole budget), never by much.
    short = sb.run(req("hashverify", stdin=b"Hello\n", fuel=r.fuel_used // 2))
    assert short.exit_code == 137 and short.timed_out and short.stdout == b""
    assert short.fuel_used == r.fuel_used // 2


@pytest.mark.parametrize("fuel", [0, -5, 1 << 64, 1.5, True])
def test_invalid_fuel_is_refused(sb, fuel):
    with pytest.raises(SandboxError) as err:
        sb.run(req("hashverify", fuel=fuel))
    assert err.value.reason == "invalid_request"


def test_wall_clock_timeout_interrupts_a_busy_module(sb):
    t0 = time.monotonic()
    r = sb.run(req("spin", fuel=10**18, timeout_s=1))
    elapsed = time.monotonic() - t0
    assert r.exit_code == 137 and r.timed_out and not r.oom_killed
    assert 0.95 <= r.duration_s <= elapsed < 10  # interrupted, not run on (room for loaded CI cores)
    assert r.fuel_used is None  # not exact after a wall-clock interrupt
    assert b"timed out" in r.stderr


def test_wall_clock_timeout_interrupts_a_sleeping_module(sb):
    t0 = time.monotonic()
    r = sb.run(req("probe", ["probe", "--sleep-ms", "30000"], timeout_s=1))
    assert time.monotonic() - t0 < 10  # not the 30 s sleep (room for loaded CI cores)
    assert r.exit_code == 137 and r.timed_out
    assert b"slept" not in r.stdout  # output after the deadline is not the job's


def test_sleep_within_the_timeout_works(sb):
    r = sb.run(req("probe", ["probe", "--sleep-ms", "200"], timeout_s=5))
    assert r.exit_code == 0 and not r.timed_out
    assert b"slept 200 ms\n" in r.stdout
    assert r.duration_s >= 0.19


def test_concurrent_timeouts_are_independent(sb):
    results: dict[str, RunResult] = {}

    def go(key: str, request: RunRequest) -> None:
        results[key] = sb.run(request)

    # Timeouts far apart (0.5 s and 5 s), so that neither can pass for the other even when loaded
    # CI cores deliver an interrupt late.
    threads = [threading.Thread(target=go, args=("short", req("spin", fuel=10**18, timeout_s=0.5))),
               threading.Thread(target=go, args=("long", req("spin", fuel=10**18, timeout_s=5))),
               threading.Thread(target=go, args=("quick", req("hashverify", stdin=b"Hello\n", timeout_s=10)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert 0.45 <= results["short"].duration_s < 3
    assert 4.95 <= results["long"].duration_s < 8
    assert results["quick"].stdout == HELLO_SHA256 and not results["quick"].timed_out


# --- memory -------------------------------------------------------------------------------------


def test_memory_limit_makes_malloc_fail(sb):
    r = sb.run(req("grow", memory_mb=16))
    assert r.exit_code == 0 and not r.oom_killed
    got = int(r.stdout.split()[1])
    assert 8 <= got <= 16, r.stdout
    bigger = sb.run(req("grow", memory_mb=64))
    assert 48 <= int(bigger.stdout.split()[1]) <= 64


def test_initial_memory_over_the_limit_is_oom(sb):
    r = sb.run(req(wat('(module (memory (export "memory") 1000) (func (export "_start")))'), memory_mb=16))
    assert r.exit_code == 137 and r.oom_killed and not r.timed_out
    assert r.stderr.startswith(b"wasm: out of memory")


def test_huge_table_is_oom(sb):
    r = sb.run(req(wat('(module (memory (export "memory") 1) (table 10000000 funcref) (func (export "_start")))')))
    assert r.exit_code == 137 and r.oom_killed


# --- isolation ----------------------------------------------------------------------------------


def test_no_filesystem_access(sb, tmp_path):
    probe_file = Path("/tmp/wasm-escape-probe")
    existed = probe_file.exists()
    r = sb.run(req("escape"))
    assert r.exit_code == 0, r.stdout  # exit code = number of successful escapes
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 4
    assert all("OPENED" not in line for line in lines)
    assert lines[0].startswith("open /etc/passwd: ")
    assert probe_file.exists() == existed


def test_traps_are_exit_134_with_the_message(sb):
    r = sb.run(req(wat('(module (memory (export "memory") 1) (func (export "_start") unreachable))')))
    assert r.exit_code == 134 and not r.timed_out
    assert r.stderr.startswith(b"wasm: trap: wasm `unreachable` instruction executed\n")
    r = sb.run(req(wat('(module (memory (export "memory") 1) (func (export "_start") i32.const 70000 i32.load drop))')))
    assert r.exit_code == 134 and b"out of bounds memory access" in r.stderr


def test_trap_in_start_section_is_a_result(sb):
    r = sb.run(req(wat('(module (memory (export "memory") 1) (func $s unreachable) (start $s) (func (export "_start")))')))
    assert r.exit_code == 134


RECURSE = '(module (memory (export "memory") 1) (func $f (param i32) (result i32) local.get 0 i32.const 1 i32.add call $f) (func (export "_start") i32.const 0 call $f drop))'


def test_stack_overflow_is_a_trap(sb):
    r = sb.run(req(wat(RECURSE)))
    assert r.exit_code == 134 and b"call stack exhausted" in r.stderr


def test_stack_overflow_on_a_small_thread_stack_does_not_crash():
    # Run in a child: were the backend wrong, the overflow would kill the process (SIGSEGV).
    code = textwrap.dedent(f"""
        import threading, wasmtime
        from distributeai.sandbox import RunRequest, open_sandbox
        sb = open_sandbox("wasm", log=print)
        mod = wasmtime.wat2wasm({RECURSE!r})
        out = []
        threading.stack_size(256 << 10)
        t = threading.Thread(target=lambda: out.append(sb.run(RunRequest("", ["r"], wasm_module=mod))))
        t.start(); t.join()
        print(out[0].exit_code, b"call stack exhausted" in out[0].stderr)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == b"134 True"


# --- output -------------------------------------------------------------------------------------


def test_output_cap_and_truncation(sb):
    r = sb.run(req("probe", ["probe", "--write-mib", "1", "--stderr-kib", "10"], output_cap=1000))
    assert len(r.stdout) == 1000 and r.stdout_truncated
    assert r.stdout.startswith(b"argc=5\n")
    assert r.stderr == b"e" * 1000 and r.stderr_truncated
    full = sb.run(req("probe", ["probe", "--write-mib", "5"], output_cap=10 << 20))
    assert full.stdout.count(b"x") == 5 << 20 and not full.stdout_truncated
    exact = sb.run(req("hashverify", stdin=b"Hello\n", output_cap=len(HELLO_SHA256)))
    assert exact.stdout == HELLO_SHA256 and not exact.stdout_truncated
    zero = sb.run(req("hashverify", stdin=b"Hello\n", output_cap=0))
    assert zero.stdout == b"" and zero.stdout_truncated and zero.exit_code == 0


def test_big_output_is_not_kept_in_memory(sb):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    r = sb.run(req("probe", ["probe", "--write-mib", "50"], output_cap=1 << 16))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert r.exit_code == 0 and len(r.stdout) == 1 << 16 and r.stdout_truncated
    assert after - before < 20 << 10  # < 20 MiB of growth for 50 MiB written


def test_fuel_note_respects_the_stderr_cap(sb):
    r = sb.run(req("spin", fuel=1000, output_cap=10))
    assert r.stderr == b"wasm: fuel" and r.stderr_truncated


# --- invalid requests ---------------------------------------------------------------------------


def test_missing_wasm_module_is_refused(sb):
    with pytest.raises(SandboxError) as err:
        sb.run(RunRequest(image="alpine:latest", command=["echo", "hi"]))
    assert err.value.reason == "invalid_request"
    assert err.value.message == "the wasm sandbox runs wasm modules only"


@pytest.mark.parametrize("data", [b"", b"garbage", b"(module)", b"\0asm\x01\0\0\0\xff\xff", module("spin")[:-3]])
def test_invalid_module_bytes_are_refused(sb, data):
    with pytest.raises(SandboxError) as err:
        sb.run(req(data))
    assert err.value.reason == "invalid_request"


def test_non_wasi_imports_are_refused(sb):
    with pytest.raises(SandboxError) as err:
        sb.run(req(wat('(module (import "env" "f" (func)) (memory (export "memory") 1) (func (export "_start")))')))
    assert err.value.reason == "invalid_request" and "env::f" in err.value.message


def test_module_without_start_is_refused(sb):
    with pytest.raises(SandboxError) as err:
        sb.run(req(wat('(module (memory (export "memory") 1) (func (export "main")))')))
    assert err.value.reason == "invalid_request"


def test_threads_and_shared_memory_are_refused(sb):
    with pytest.raises(SandboxError) as err:
        sb.run(req(wat('(module (memory (export "memory") 1 1 shared) (func (export "_start")))')))
    assert err.value.reason == "invalid_request"


# --- concurrency and the module cache -----------------------------------------------------------


def test_concurrent_runs_from_threads(sb):
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(10):
                data = f"thread {i} run {j}\n".encode() * (i + 1)
                r = sb.run(req("hashverify", stdin=data))
                assert r.stdout == hashlib.sha256(data).hexdigest().encode() + b"  -\n"
                assert r.exit_code == 0
        except BaseException as e:  # collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]


def test_each_module_is_compiled_once():
    sb = WasmSandbox()
    calls = []
    real = sb._compile

    def counting(data: bytes, digest: str):
        calls.append(digest)
        time.sleep(0.05)  # widen the race
        return real(data, digest)

    sb._compile = counting  # type: ignore[method-assign]
    try:
        threads = [threading.Thread(target=sb.run, args=(req("hashverify", stdin=b"x"),)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        sb.run(req("hashverify"))
        sb.run(req("spin", fuel=10))
        assert len(calls) == 2
    finally:
        sb.close()


def test_closed_sandbox_refuses_runs():
    sb = WasmSandbox()
    assert sb.run(req("hashverify", stdin=b"Hello\n")).stdout == HELLO_SHA256
    sb.close()
    with pytest.raises(SandboxError) as err:
        sb.check()
    assert err.value.reason == "backend_error"
    with pytest.raises(SandboxError):
        sb.run(req("hashverify"))


async def test_run_from_trio_worker_thread(sb):
    import trio

    r = await trio.to_thread.run_sync(sb.run, req("hashverify", stdin=b"Hello\n"))
    assert r.stdout == HELLO_SHA256


def test_committed_workloads_are_small():
    for name in ("hashverify", "spin", "grow", "escape", "probe"):
        size = os.path.getsize(WORKLOADS / f"{name}.wasm")
        assert 0 < size < 64 << 10, (name, size)
        assert (WORKLOADS / f"{name}.c").exists()


# --- pull and cancel ----------------------------------------------------------------------------


def test_pull_is_a_no_op(sb):
    assert sb.pull("anything:latest") is None
    assert sb.has_image("anything:latest")


@pytest.mark.parametrize("argv", [["spin"], ["probe", "--sleep-ms", "60000"]], ids=["busy", "sleeping"])
def test_cancel_stops_a_running_module_promptly(sb, argv):
    rid = f"wasm-{argv[0]}-{time.monotonic_ns()}"
    request = req(argv[0], argv, fuel=10**18, timeout_s=120, run_id=rid)
    thread, box = run_in_thread(sb, request)
    assert sb._runs.wait_running(rid, 30), "the module never started"  # white box: no side channel
    cancelled_at = time.monotonic()
    sb.cancel(rid)
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - cancelled_at < 2
    assert box["error"].reason == "cancelled"
    sb.cancel(rid)  # after the end: nothing
    assert sb.run(req("hashverify", stdin=b"Hello\n", run_id=rid + "-next")).stdout == HELLO_SHA256


def test_cancel_before_the_run_and_of_unknown_ids(sb):
    sb.cancel("never-used")
    sb.cancel("early")
    with pytest.raises(SandboxError) as err:
        sb.run(req("hashverify", stdin=b"Hello\n", run_id="early"))
    assert err.value.reason == "cancelled"
    r = sb.run(req("hashverify", stdin=b"Hello\n", run_id="late"))
    sb.cancel("late")
    assert r.stdout == HELLO_SHA256 and r.exit_code == 0


def test_cancel_leaves_concurrent_runs_alone(sb):
    thread, box = run_in_thread(sb, req("spin", fuel=10**18, timeout_s=120, run_id="victim"))
    assert sb._runs.wait_running("victim", 30)
    survivor = sb.run(req("spin", fuel=10**8, timeout_s=30, run_id="survivor"))
    sb.cancel("victim")
    thread.join(5)
    assert box["error"].reason == "cancelled"
    assert survivor.exit_code == 137 and survivor.fuel_used == 10**8  # ran to its own fuel limit
