"""Jobs as WebAssembly (WASI preview 1) modules run in-process by wasmtime.

A job is `RunRequest.wasm_module`: the bytes of a WASI *command* module (one that exports
`_start`). It runs with argv = `command` (command[0] is the program name), exactly `env`, stdin =
`stdin`, and stdout/stderr captured up to `output_cap` each. `image`, `cpu`, `pids_limit` and
`out_dir` are ignored (a wasm job is one thread and has no processes and no /out).

Isolation: the module can reach only what WASI gives it: no sockets, no inherited stdio, and no
preopened directory but `RunRequest.in_dir`, when set, preopened READ-ONLY as /in (the first
preopen: fd 3). Opening a file there for writing, or creating one, fails (WASI errno 63,
EPERM); a symlink inside it that points outside it, by absolute or relative path, cannot be
opened, followed or not (EPERM, or ELOOP without the follow flag: wasmtime's cap-std never leaves
the preopened directory). Without in_dir every path lookup fails (ENOTCAPABLE/EBADF).
Clocks and `random_get` are the host's (a module that reads them is not deterministic).

Limits, and how a run ends:
- fuel: `req.fuel` (default DEFAULT_FUEL) units of wasm work (about one per instruction).
  Running out is a result, not an exception: exit 137, timed_out=True, fuel_used = the budget,
  stderr ends with "wasm: fuel exhausted". Fuel is deterministic: the same module, input and
  budget use the same fuel on every run and every executor (same wasmtime version), so
  `fuel_used` is an exact, verifiable measure of the work. wasmtime checks fuel only at function
  entries and loop headers, so a run that ends within a few dozen units past its budget still
  completes, and then reports fuel_used = the budget.
- wall clock: `timeout_s`, enforced with wasmtime's epoch interruption: one engine-wide ticker
  thread advances the epoch every TICK_S and each store's epoch-deadline callback (wasm_host.py)
  traps its run once past the deadline; for a module blocked in `poll_oneoff` (sleep), the
  backend's own `poll_oneoff` never sleeps past the deadline. Exit 137, timed_out=True,
  fuel_used=None (fuel is not exact when wall-clock interrupted; wasmtime does not flush it).
- cancel(run_id): the same callback traps the run at the next tick (a sleeping module is woken
  first); run() then raises SandboxError("cancelled").
- memory: linear memory is capped at `memory_mb` (Store.set_limits). Past it, `memory.grow`
  returns -1 and malloc returns NULL: what happens then is the module's business. A module whose
  *initial* memory (or tables) exceeds the limits cannot be instantiated: exit 137,
  oom_killed=True. Tables are capped at TABLE_ELEMENTS elements; one memory per module.
- WASI `proc_exit(n)` gives exit code n (wasmtime accepts 0..125; a larger status is a trap).
  Returning from `_start` is exit 0. Any other trap (unreachable, out-of-bounds access, stack
  overflow, ...) is exit 134 (as SIGABRT) with "wasm: trap: <message>" on stderr.

Invalid requests raise SandboxError("invalid_request"): no `wasm_module`, bytes that are not a
valid binary module (text format is refused too), a module that is not a WASI command (no
`_start`, or imports other than wasi_snapshot_preview1), a fuel budget that is not a positive
integer. Every honest executor refuses the same request the same way.

Compiled modules are cached by the SHA-256 of their bytes (LRU, MODULE_CACHE_SIZE entries):
a module is compiled once per process (~30 ms for a 20 KB module); a run then costs well under
a millisecond. `run` is blocking and thread-safe: call it from worker threads, concurrently.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .base import SIGNAL_EXIT_BASE, LogSink, RunRequest, RunResult, SandboxError
from .runs import RunHandle, RunRegistry
from .wasm_host import WASI, Capture, RunState, current, install_stopper, poll_oneoff, set_stdin

__all__ = ["WasmSandbox", "DEFAULT_FUEL"]

NAME = "wasm"
# About 10-50 s of pure computation on the 2-core test VM (spin.wasm burns ~10^10 fuel/s, a
# memset-heavy module ~2*10^9/s). Jobs that care about determinism should set `fuel` themselves.
DEFAULT_FUEL = 100_000_000_000
MAX_FUEL = (1 << 63) - 1
IN_GUEST = "/in"  # where the module finds RunRequest.in_dir (read-only)
TICK_S = 0.01  # epoch ticker period: the resolution of the wall-clock timeout and of cancel
TABLE_ELEMENTS = 1 << 18  # per table; a funcref element takes 8-16 bytes of host memory
MAX_TABLES = 8
MODULE_CACHE_SIZE = 32  # compiled modules kept (LRU)
# wasm call stack, fixed so that the depth at which recursion traps is the same on every
# executor (wasmtime's default today). It lives on the calling thread's native stack: a thread
# with less than MIN_THREAD_STACK hands the job to a helper thread of HELPER_THREAD_STACK, since
# overflowing the native stack from wasm code kills the whole process (SIGSEGV), not the job.
MAX_WASM_STACK = 512 << 10
MIN_THREAD_STACK = MAX_WASM_STACK + (1 << 20)
HELPER_THREAD_STACK = 8 << 20
WASM_MAGIC = b"\0asm"

EXIT_KILLED = SIGNAL_EXIT_BASE + 9  # 137: fuel exhausted, wall-clock timeout, memory limit
EXIT_TRAP = SIGNAL_EXIT_BASE + 6  # 134: any other trap, like an abort()

@dataclass
class _Prepared:
    module: Any  # wasmtime.Module
    pre: Any  # wasmtime.InstancePre
    digest: str
    compile_s: float


class _Ticker:
    """Advances the engine's epoch every TICK_S while at least one run is active.

    The epoch is engine-wide, so one ticker serves every concurrent run: each store's deadline
    is always the next tick, where its own callback (wasm_host.install_stopper) decides whether
    that run goes on, timed out or was cancelled."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def enter(self) -> None:
        with self._cond:
            self._active += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="wasm-epoch", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def leave(self) -> None:
        with self._cond:
            self._active -= 1

    def close(self) -> None:
        """Stop once no run is active (a running job keeps its timeout)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._active == 0:
                    if self._closed:
                        self._thread = None
                        return
                    self._cond.wait()
            time.sleep(TICK_S)
            self._engine.increment_epoch()


_tls = threading.local()


class WasmSandbox:
    name = NAME

    def __init__(self, log: LogSink | None = None) -> None:
        import logging

        self._log: LogSink = log if log is not None else logging.getLogger("distributeai.sandbox")
        self._lock = threading.Lock()  # guards the cache, _compiling, _closed and _ready
        self._cache: OrderedDict[str, _Prepared] = OrderedDict()
        self._compiling: dict[str, threading.Lock] = {}
        self._closed = False
        self._import_error: str | None = None
        self._runs = RunRegistry()
        self._ticker: _Ticker | None = None
        # wasmtime and its engine (about 8-13 MB of a node's memory) load at the first run, so a
        # node that never runs a wasm job never pays for them; a missing wasmtime is said at check().
        import importlib.util

        if importlib.util.find_spec("wasmtime") is None:
            self._import_error = "wasmtime is not installed"

    def _ready(self) -> None:
        """Import wasmtime and make the engine, linker and ticker, once (under self._lock)."""
        if self._ticker is not None:
            return
        try:
            import wasmtime
        except ImportError as e:  # a pip dependency that does not load
            self._import_error = f"wasmtime is not installed: {e}"
            raise SandboxError("backend_error", self._import_error) from None
        self._wt = wasmtime
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        # Only what a WASI command needs; each of these would let a module use memory outside
        # the one linear memory that memory_mb caps, or behave differently across hosts.
        cfg.wasm_threads = False
        cfg.shared_memory = False
        cfg.wasm_multi_memory = False
        cfg.wasm_memory64 = False
        cfg.wasm_gc = False
        cfg.wasm_component_model = False
        # Same results on every executor: canonical NaNs, deterministic relaxed SIMD.
        cfg.cranelift_nan_canonicalization = True
        cfg.wasm_relaxed_simd_deterministic = True
        cfg.max_wasm_stack = MAX_WASM_STACK
        self._engine = wasmtime.Engine(cfg)
        self._linker = self._make_linker()
        self._ticker = _Ticker(self._engine)

    # --- Sandbox protocol -------------------------------------------------------------------

    def check(self) -> None:
        if self._import_error is not None:
            raise SandboxError("backend_error", self._import_error)
        if self._closed:
            raise SandboxError("backend_error", "sandbox is closed")

    def has_image(self, image: str) -> bool:
        return True  # images mean nothing here: the job brings its module

    def pull(self, image: str) -> None:
        return None  # images mean nothing here: nothing to fetch

    def cancel(self, run_id: str) -> None:
        """Trap the run at the engine's next epoch tick (TICK_S); wake it if asleep in
        poll_oneoff (see runs.py)."""
        self._runs.cancel(run_id)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cache.clear()
        if self._ticker is not None:
            self._ticker.close()

    def run(self, req: RunRequest) -> RunResult:
        """Run `req.wasm_module` to completion. BLOCKING and thread-safe."""
        if req.wasm_module is None:
            raise SandboxError("invalid_request", "the wasm sandbox runs wasm modules only")
        self.check()
        fuel = DEFAULT_FUEL if req.fuel is None else req.fuel
        if not isinstance(fuel, int) or isinstance(fuel, bool) or not 0 < fuel <= MAX_FUEL:
            raise SandboxError("invalid_request", f"fuel must be an int in [1, {MAX_FUEL}], got {fuel!r}")
        with self._lock:
            self._ready()
        prepared = self._prepare(bytes(req.wasm_module))
        with self._runs.track(req.run_id) as handle:
            handle.raise_if_cancelled()
            self._ticker.enter()
            try:
                if _thread_stack_ok():
                    result = self._run(prepared, req, fuel, handle)
                else:
                    result = _on_helper_thread(self._run, prepared, req, fuel, handle)
            finally:
                self._ticker.leave()
            handle.raise_if_cancelled()
            return result

    # --- compiling --------------------------------------------------------------------------

    def _make_linker(self) -> Any:
        wt = self._wt
        linker = wt.Linker(self._engine)
        linker.define_wasi()
        # wasmtime's own poll_oneoff blocks in the host for as long as the module asks (sleep),
        # where neither fuel nor epochs can stop it. This one sleeps at most to the deadline.
        linker.allow_shadowing = True
        i32 = wt.ValType.i32()
        linker.define_func(WASI, "poll_oneoff", wt.FuncType([i32, i32, i32, i32], [i32]),
                           poll_oneoff, access_caller=True)
        linker.allow_shadowing = False
        return linker

    def _prepare(self, module_bytes: bytes) -> _Prepared:
        """The compiled, linked module for these bytes: from the cache, or compiled once (other
        threads asking for the same bytes meanwhile wait for that compile)."""
        digest = hashlib.sha256(module_bytes).hexdigest()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None:
                self._cache.move_to_end(digest)
                return hit
            gate = self._compiling.setdefault(digest, threading.Lock())
        with gate:
            with self._lock:
                hit = self._cache.get(digest)
                if hit is not None:
                    return hit
            try:
                prepared = self._compile(module_bytes, digest)
            except BaseException:
                with self._lock:
                    self._compiling.pop(digest, None)
                raise
            with self._lock:  # cached and un-gated at once: no thread can miss both
                if not self._closed:
                    self._cache[digest] = prepared
                    while len(self._cache) > MODULE_CACHE_SIZE:
                        self._cache.popitem(last=False)
                self._compiling.pop(digest, None)
            return prepared

    def _compile(self, module_bytes: bytes, digest: str) -> _Prepared:
        wt = self._wt
        if not module_bytes.startswith(WASM_MAGIC):
            raise SandboxError("invalid_request", "wasm_module is not a binary WebAssembly module")
        t0 = time.perf_counter()
        try:
            module = wt.Module(self._engine, module_bytes)
        except wt.WasmtimeError as e:
            raise SandboxError("invalid_request", f"invalid wasm module: {_first_line(e)}") from None
        for imp in module.imports:
            if imp.module != WASI:
                raise SandboxError("invalid_request",
                                   f"wasm module imports {imp.module}::{imp.name}: only {WASI} is provided")
        starts = [e for e in module.exports if e.name == "_start"]
        if not starts or not isinstance(starts[0].type, wt.FuncType) or starts[0].type.params or starts[0].type.results:
            raise SandboxError("invalid_request", "wasm module is not a WASI command: no `_start` function")
        try:
            pre = self._linker.instantiate_pre(module)
        except wt.WasmtimeError as e:
            raise SandboxError("invalid_request", f"cannot link wasm module: {_first_line(e)}") from None
        compile_s = time.perf_counter() - t0
        self._log_info(f"wasm: compiled module {digest[:12]} ({len(module_bytes)} bytes) in {compile_s * 1000:.1f} ms")
        return _Prepared(module=module, pre=pre, digest=digest, compile_s=compile_s)

    def _log_info(self, message: str) -> None:
        import logging

        if isinstance(self._log, logging.Logger):
            self._log.debug(message)

    # --- running ----------------------------------------------------------------------------

    def _run(self, prepared: _Prepared, req: RunRequest, fuel: int, handle: RunHandle) -> RunResult:
        wt = self._wt
        out = Capture(req.output_cap)
        err = Capture(req.output_cap)
        store = wt.Store(self._engine)
        try:
            store.set_limits(memory_size=req.memory_mb << 20, table_elements=TABLE_ELEMENTS,
                             instances=1, tables=MAX_TABLES, memories=1)
            store.set_fuel(fuel)
            wasi = wt.WasiConfig()
            try:
                wasi.argv = list(req.command)
                wasi.env = list(req.env.items())
            except (UnicodeError, wt.WasmtimeError) as e:
                raise SandboxError("invalid_request", f"argv or env not usable by WASI: {e}") from None
            set_stdin(wt, wasi, req.stdin)
            if req.in_dir is not None:
                try:  # wasmtime-py 50: (host path, guest path, fs_mutable)
                    wasi.preopen_dir(req.in_dir, IN_GUEST, False)
                except (UnicodeError, wt.WasmtimeError) as e:
                    raise SandboxError("invalid_request", f"in_dir not usable by WASI: {e}") from None
            wasi.stdout_custom = out
            wasi.stderr_custom = err
            start = time.monotonic()
            state = RunState(deadline=start + req.timeout_s, mono_base=start, captures=(out, err))
            store.set_wasi(wasi)  # no preopen but /in, no inherited stdio, no network
            install_stopper(wt, store, state)
            current.state = state
            handle.attach(state.cancelled.set)
            exit_code, timed_out, oom, note = 0, False, False, ""
            fuel_exact = True
            try:
                try:
                    instance = prepared.pre.instantiate(store)
                except wt.WasmtimeError as e:
                    if isinstance(e, wt.ExitTrap):
                        raise
                    # resource limits at instantiation: initial memory or tables too large
                    exit_code, oom, note = EXIT_KILLED, True, f"wasm: out of memory: {_first_line(e)}"
                else:
                    instance.exports(store)["_start"](store)
            except wt.ExitTrap as e:
                exit_code = e.code
            except wt.Trap as e:
                code = e.trap_code
                if code == wt.TrapCode.OUT_OF_FUEL:
                    exit_code, timed_out, note = EXIT_KILLED, True, f"wasm: fuel exhausted ({fuel} units)"
                elif code == wt.TrapCode.INTERRUPT:
                    exit_code, timed_out, note = EXIT_KILLED, True, f"wasm: timed out after {req.timeout_s:g} s"
                    fuel_exact = False
                else:
                    exit_code, note = EXIT_TRAP, _trap_note("trap", e)
            except wt.WasmtimeError as e:  # e.g. proc_exit with a status outside 0..125
                exit_code, note = EXIT_TRAP, _trap_note("error", e)
            finally:
                duration = time.monotonic() - start
                current.state = None
                handle.detach()
            if state.host_error is not None:
                raise SandboxError("backend_error", f"wasm host function failed: {state.host_error}")
            if state.stopped == "cancelled":
                raise SandboxError("cancelled", f"run {req.run_id} was cancelled")
            if (state.deadline_hit or state.stopped == "timeout") and not timed_out:
                # the stopper trapped it at its deadline, or it was still sleeping then: it timed
                # out, whatever came next
                exit_code, timed_out, note = EXIT_KILLED, True, f"wasm: timed out after {req.timeout_s:g} s"
                fuel_exact = False
            try:
                fuel_used: int | None = fuel - store.get_fuel() if fuel_exact else None
            except wt.WasmtimeError:
                fuel_used = None
        finally:
            store.close()  # frees the linear memory now, not at the next garbage collection
        if note:
            err.closed = False
            err(note.encode("utf-8", "replace") + b"\n")
        return RunResult(
            exit_code=exit_code,
            stdout=out.value(),
            stderr=err.value(),
            timed_out=timed_out,
            oom_killed=oom,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            duration_s=duration,
            sandbox=NAME,
            fuel_used=fuel_used,
        )


def _trap_note(kind: str, e: BaseException) -> str:
    """'wasm: trap: <cause>' and then wasmtime's backtrace (function indexes and offsets)."""
    text = str(e).strip()
    backtrace, sep, cause = text.partition("Caused by:")
    if not sep:
        return f"wasm: {kind}: {text}"
    causes = [line.strip() for line in cause.strip().splitlines() if line.strip()]
    causes = [c.split(": ", 1)[1] if c.split(": ", 1)[0].isdigit() else c for c in causes]
    causes = [c.removeprefix("wasm trap: ") for c in causes]
    return f"wasm: {kind}: {'; '.join(causes)}\n{backtrace.rstrip()}"


def _thread_stack_ok() -> bool:
    """Whether this thread's native stack can hold MAX_WASM_STACK plus the host's frames."""
    ok = getattr(_tls, "stack_ok", None)
    if ok is None:
        size = _thread_stack_size()
        ok = _tls.stack_ok = size is None or size >= MIN_THREAD_STACK
    return ok


def _thread_stack_size() -> int | None:
    """The calling thread's stack size (glibc's pthread_getattr_np), None if unknown."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.pthread_self.restype = ctypes.c_ulong
        attr = ctypes.create_string_buffer(256)  # pthread_attr_t: 56 bytes on x86_64, 64 on arm64
        if libc.pthread_getattr_np(ctypes.c_ulong(libc.pthread_self()), attr) != 0:
            return None
        try:
            addr, size = ctypes.c_void_p(), ctypes.c_size_t()
            if libc.pthread_attr_getstack(attr, ctypes.byref(addr), ctypes.byref(size)) != 0:
                return None
            return size.value
        finally:
            libc.pthread_attr_destroy(attr)
    except (OSError, AttributeError):
        return None


_stack_size_lock = threading.Lock()


def _on_helper_thread(fn: Any, *args: Any) -> Any:
    """fn(*args) on a new thread with a HELPER_THREAD_STACK stack; its result or exception."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # handed back to the caller
            box["error"] = e

    thread = threading.Thread(target=target, name="wasm-job", daemon=True)
    with _stack_size_lock:  # threading.stack_size is process-wide: set it just for this start
        old = threading.stack_size(HELPER_THREAD_STACK)
        try:
            thread.start()
        finally:
            threading.stack_size(old)
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


