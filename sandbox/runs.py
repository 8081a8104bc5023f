"""Runs in progress by `RunRequest.run_id`, so that `cancel(run_id)` from another thread can stop one.

Every backend keeps one `RunRegistry`. A run is tracked from the start of `run()` to its end; once
the job is actually running the backend attaches a *stopper* (kill the container, the cgroups, the
process group; interrupt the wasm store). `cancel(run_id)`:
  - on a running job: marks it cancelled and calls its stopper (at once, on the caller's thread);
  - on a tracked run whose job has not started yet: marks it cancelled; the stopper is called the
    moment it is attached, and a backend that looks at `cancelled` before starting the job
    raises SandboxError("cancelled") without starting it;
  - on an id no run has (yet): remembers it (the last EARLY_CANCELS ids), so that a run started
    with it later is cancelled at once; this closes the race of a cancel that overtakes the
    thread about to start the run. run_ids must therefore be unique per run;
  - after the run ended: nothing is stopped (the id is remembered as for an unknown one, which is
    harmless since run_ids are unique per run). Never raises.
A cancelled run raises SandboxError("cancelled") from `run()`: a cancelled job has no result.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .base import SandboxError

__all__ = ["RunHandle", "RunRegistry", "EARLY_CANCELS"]

EARLY_CANCELS = 1024  # ids cancelled before their run began, remembered (oldest dropped first)


class RunHandle:
    """One tracked run: whether it was cancelled, and how to stop its job."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self.cancelled = threading.Event()
        self.running = threading.Event()  # set when a stopper is attached: the job is running
        self._lock = threading.Lock()
        self._stopper: Callable[[], object] | None = None

    def attach(self, stopper: Callable[[], object]) -> None:
        """The job is running and `stopper` stops it; called at once if already cancelled."""
        with self._lock:
            self._stopper = stopper
            self.running.set()
            if self.cancelled.is_set():
                _call(stopper)

    def detach(self) -> None:
        """The job is over (before its process is reaped: a stopper must never hit a reused pid)."""
        with self._lock:
            self._stopper = None

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            if self._stopper is not None:
                _call(self._stopper)

    def raise_if_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise SandboxError("cancelled", f"run {self.run_id} was cancelled")


def _call(stopper: Callable[[], object]) -> None:
    try:
        stopper()
    except Exception:  # noqa: BLE001 - a job that ended meanwhile cannot be stopped: not an error
        pass


class RunRegistry:
    """The runs of one backend, by run_id. Thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: dict[str, RunHandle] = {}
        self._early: OrderedDict[str, None] = OrderedDict()

    @contextmanager
    def track(self, run_id: str | None) -> Iterator[RunHandle]:
        """Track one run for the duration of the block. A run without run_id cannot be
        cancelled; two runs with the same id at once: SandboxError("invalid_request")."""
        handle = RunHandle(run_id)
        if run_id is None:
            yield handle
            return
        with self._cond:
            if run_id in self._active:
                raise SandboxError("invalid_request", f"run_id {run_id!r} is already running")
            if run_id in self._early:  # cancelled before it began
                del self._early[run_id]
                handle.cancelled.set()
            self._active[run_id] = handle
            self._cond.notify_all()
        try:
            yield handle
        finally:
            with self._cond:
                self._active.pop(run_id, None)

    def cancel(self, run_id: str) -> None:
        """Stop the run `run_id` (see the module docstring). Idempotent; never raises."""
        with self._cond:
            handle = self._active.get(run_id)
            if handle is None:
                self._early[run_id] = None
                self._early.move_to_end(run_id)
                while len(self._early) > EARLY_CANCELS:
                    self._early.popitem(last=False)
                return
        handle.cancel()

    def wait_running(self, run_id: str, timeout: float) -> bool:
        """Block until the run `run_id` has a running job (for tests and tools); False on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: run_id in self._active, timeout):
                return False
            handle = self._active[run_id]
        return handle.running.wait(timeout)
