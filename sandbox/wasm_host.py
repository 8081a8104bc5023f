"""The host side of a wasm run: what the module's WASI imports reach, and how a run is stopped.

- `Capture`: the stdout/stderr sinks (keep `output_cap` bytes, drop the rest, no files).
- `set_stdin`: the module's stdin from memory.
- `poll_oneoff`: replaces wasmtime's, whose sleep blocks in the host where neither fuel nor
  epochs can stop it; this one never sleeps past the run's deadline and wakes on cancel.
- `install_stopper`: an epoch-deadline callback on the run's store, called every engine tick
  (the backend's ticker): it traps the run once it is cancelled or past its wall-clock deadline,
  and records which (`RunState.stopped`), so the backend reports a timeout or a cancel.

`current.state` is the RunState of the run on this thread (host functions have no other way to
find it). Nothing here raises into wasmtime: an exception escaping a host function is kept by
wasmtime-py in a process-global slot that another thread's run could pick up.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Capture", "RunState", "WASI", "current", "install_stopper", "poll_oneoff", "set_stdin"]

WASI = "wasi_snapshot_preview1"
# WASI preview 1 constants used by poll_oneoff
ERRNO_SUCCESS = 0
ERRNO_BADF = 8
ERRNO_FAULT = 21
ERRNO_INVAL = 28
EVENTTYPE_CLOCK = 0
EVENTTYPE_FD_READ = 1
EVENTTYPE_FD_WRITE = 2
CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
SUBCLOCKFLAGS_ABSTIME = 1
SUBSCRIPTION_SIZE = 48
EVENT_SIZE = 32
U32 = 0xFFFFFFFF

current = threading.local()


class Capture:
    """A WASI stdout/stderr sink: keeps the first `cap` bytes, counts and drops the rest, so a
    module writing without end costs neither memory nor disk. Called on the running thread."""

    __slots__ = ("cap", "chunks", "size", "truncated", "closed")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.closed = False  # set at the wall-clock deadline: later output is not the job's

    def __call__(self, data: bytes) -> None:  # returning None: all of `data` was written
        if self.closed:
            return
        room = self.cap - self.size
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        if data:
            self.chunks.append(data)
            self.size += len(data)

    def value(self) -> bytes:
        return b"".join(self.chunks)


@dataclass
class RunState:
    """What the backend's host functions need to know about the run on this thread."""

    deadline: float  # time.monotonic() at which the job has run out of wall-clock time
    mono_base: float  # time.monotonic() when the WASI context (and its monotonic clock) began
    captures: tuple[Capture, ...]
    deadline_hit: bool = False  # a host call reached the deadline
    host_error: str | None = None  # a bug in a host function (never raised into wasmtime)
    cancelled: threading.Event = field(default_factory=threading.Event)  # set by cancel(run_id)
    stopped: str | None = None  # "timeout" or "cancelled" once the stopper trapped the run
    stopper: Any = None  # the C callback of install_stopper, kept alive as long as the run


# wasmtime_update_deadline_kind_t: keep running, with a new deadline `delta` ticks ahead
UPDATE_DEADLINE_CONTINUE = 0
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


def install_stopper(wt: Any, store: Any, state: RunState) -> None:
    """Check `state` at every engine tick: trap the run once it is cancelled or past its deadline
    (recorded in state.stopped), else run on until the next tick. The C callback is kept in
    state.stopper: `state` must live as long as the store runs code."""
    ffi = wt._ffi
    signature = ctypes.CFUNCTYPE(
        ctypes.c_size_t,
        ctypes.POINTER(ffi.wasmtime_context_t),
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t),
    )

    def on_tick(_context: Any, _data: Any, delta: Any, kind: Any) -> int:
        try:
            if state.cancelled.is_set():
                state.stopped = "cancelled"
            elif time.monotonic() >= state.deadline:
                state.stopped = "timeout"
            if state.stopped is None:
                delta[0] = 1
                kind[0] = UPDATE_DEADLINE_CONTINUE
                return 0
        except Exception:  # noqa: BLE001 - never raise into wasmtime (see the module docstring)
            state.host_error = traceback.format_exc(limit=3)
        error = ffi.wasmtime_error_new(f"wasm: stopped ({state.stopped or 'host error'})".encode())
        return ctypes.cast(error, ctypes.c_void_p).value or 0

    state.stopper = signature(on_tick)
    ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), state.stopper, None, _NO_FINALIZER)
    store.set_epoch_deadline(1)


def set_stdin(wt: Any, wasi: Any, data: bytes) -> None:
    """Give the module `data` as its stdin, from memory (wasmtime's C API has it; wasmtime-py
    does not wrap it); else from a temporary file, opened by wasmtime then unlinked."""
    ffi = getattr(wt, "_ffi", None)
    if ffi is not None and hasattr(ffi, "wasi_config_set_stdin_bytes") and hasattr(ffi, "bytes_to_capi"):
        import ctypes

        vec = ffi.bytes_to_capi(bytes(data))  # wasmtime takes ownership of the vector
        ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))
        return
    import os
    import tempfile

    fd, path = tempfile.mkstemp(prefix="dai-wasm-stdin-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        wasi.stdin_file = path
    finally:
        os.unlink(path)


# --- poll_oneoff --------------------------------------------------------------------------------

_SUB_HEAD = struct.Struct("<QB")  # userdata, tag
_SUB_CLOCK = struct.Struct("<I4xQQH")  # at +16: clock id, timeout (ns), precision, flags
_SUB_FD = struct.Struct("<I")  # at +16: fd
_EVENT = struct.Struct("<QHB5xQH6x")  # userdata, errno, type, nbytes, flags


def poll_oneoff(caller: Any, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
    """WASI poll_oneoff for the backend's stdio: stdin, stdout and stderr are always ready (they
    are memory buffers); clocks are real, but the thread never sleeps past the job's deadline.

    Never raises: a Python exception escaping a host function is kept by wasmtime-py in a
    process-global slot that another thread's run could pick up."""
    state: RunState | None = getattr(current, "state", None)
    try:
        return _poll(caller, state, in_ptr & U32, out_ptr & U32, nsubs & U32, nevents_ptr & U32)
    except Exception:
        if state is not None:
            state.host_error = traceback.format_exc(limit=3)
        return ERRNO_INVAL


def _poll(caller: Any, state: RunState | None, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
    if state is None:
        raise RuntimeError("poll_oneoff outside a WasmSandbox run")
    memory = caller.get("memory")
    if memory is None or not hasattr(memory, "data_len"):
        return ERRNO_FAULT
    if nsubs == 0:
        return ERRNO_INVAL
    size = memory.data_len(caller)
    if (in_ptr + nsubs * SUBSCRIPTION_SIZE > size or out_ptr + nsubs * EVENT_SIZE > size
            or nevents_ptr + 4 > size):
        return ERRNO_FAULT
    raw = bytes(memory.read(caller, in_ptr, in_ptr + nsubs * SUBSCRIPTION_SIZE))
    now = time.monotonic()
    ready: list[tuple[int, int, int]] = []  # (userdata, errno, event type)
    clocks: list[tuple[float, int]] = []  # (seconds to wait, userdata)
    for i in range(nsubs):
        base = i * SUBSCRIPTION_SIZE
        userdata, tag = _SUB_HEAD.unpack_from(raw, base)
        if tag == EVENTTYPE_CLOCK:
            clock_id, timeout_ns, _precision, flags = _SUB_CLOCK.unpack_from(raw, base + 16)
            if clock_id not in (CLOCK_REALTIME, CLOCK_MONOTONIC):
                ready.append((userdata, ERRNO_INVAL, EVENTTYPE_CLOCK))
                continue
            wait = timeout_ns / 1e9
            if flags & SUBCLOCKFLAGS_ABSTIME:
                # wasmtime's monotonic clock counts from the WASI context's creation
                wait -= time.time() if clock_id == CLOCK_REALTIME else now - state.mono_base
            clocks.append((max(0.0, wait), userdata))
        elif tag in (EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE):
            (fd,) = _SUB_FD.unpack_from(raw, base + 16)
            ok = fd == 0 if tag == EVENTTYPE_FD_READ else fd in (1, 2)
            ready.append((userdata, ERRNO_SUCCESS if ok else ERRNO_BADF, tag))
        else:
            return ERRNO_INVAL
    if not ready and clocks:
        wait = min(w for w, _ in clocks)
        remaining = state.deadline - now
        if wait >= remaining:
            # The job would still be asleep at its deadline: sleep to it and stop the job's
            # output there; the epoch ticker interrupts it as soon as it is back in wasm code.
            if remaining > 0 and state.cancelled.wait(remaining):
                return ERRNO_SUCCESS if _write_events(caller, memory, out_ptr, nevents_ptr, []) else ERRNO_FAULT
            state.deadline_hit = True
            for capture in state.captures:
                capture.closed = True
            return ERRNO_SUCCESS if _write_events(caller, memory, out_ptr, nevents_ptr, [
                (ud, ERRNO_SUCCESS, EVENTTYPE_CLOCK) for w, ud in clocks if w <= wait]) else ERRNO_FAULT
        if wait > 0 and state.cancelled.wait(wait):
            # cancelled while asleep: back into wasm code, where the next tick's stopper traps
            return ERRNO_SUCCESS if _write_events(caller, memory, out_ptr, nevents_ptr, []) else ERRNO_FAULT
        ready = [(ud, ERRNO_SUCCESS, EVENTTYPE_CLOCK) for w, ud in clocks if w <= wait]
    else:
        ready += [(ud, ERRNO_SUCCESS, EVENTTYPE_CLOCK) for w, ud in clocks if w <= 0]
    return ERRNO_SUCCESS if _write_events(caller, memory, out_ptr, nevents_ptr, ready) else ERRNO_FAULT


def _write_events(caller: Any, memory: Any, out_ptr: int, nevents_ptr: int,
                  events: list[tuple[int, int, int]]) -> bool:
    buf = bytearray(len(events) * EVENT_SIZE)
    for k, (userdata, errno, etype) in enumerate(events):
        _EVENT.pack_into(buf, k * EVENT_SIZE, userdata, errno, etype, 0, 0)
    try:
        if buf:
            memory.write(caller, buf, out_ptr)
        memory.write(caller, struct.pack("<I", len(events)), nevents_ptr)
    except IndexError:
        return False
    return True
